package bus

import (
	"context"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Handler processes one input event and returns the events it produces.
// The runtime publishes them (with derived ids) and then acks the input; a
// handler never sees the JetStream message.
type Handler func(ctx context.Context, in events.Event) ([]events.Event, error)

// Middleware wraps a Handler: recovery, logging, metrics.
type Middleware func(Handler) Handler

// Typed adapts a handler of one payload type to a Handler:
//
//	bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) { … })
//
// An input of another type is a failure.ErrInvalid (the consumer's filter should
// never let one through).
func Typed[T events.Payload](fn func(ctx context.Context, in T) ([]events.Event, error)) Handler {
	return func(ctx context.Context, in events.Event) ([]events.Event, error) {
		p, ok := in.Data.(T)
		if !ok {
			var want T
			return nil, failure.Invalid(fmt.Errorf("handler for %s got %s", want.EventType(), in.Type()))
		}
		return fn(events.WithInput(ctx, in), p)
	}
}

// Input returns the envelope of the event being handled: its id, build and
// time, which a typed handler does not receive as arguments. It is request
// metadata, not configuration (events.Input).
func Input(ctx context.Context) (events.Event, bool) { return events.Input(ctx) }
