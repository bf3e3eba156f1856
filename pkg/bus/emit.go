package bus

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Emit publishes an event while the handler still runs: progress of long
// work, which a handler's return value would only deliver at the end. Its
// id is derived from the input like an output's, and it is published
// before the handler's outputs. Emit blocks only when many emitted events
// are waiting; outside a handler it does nothing.
func Emit(ctx context.Context, p events.Payload) {
	if em, ok := ctx.Value(emitterKey{}).(*emitter); ok {
		em.emit(p)
	}
}

type emitterKey struct{}

// emitter publishes a handler's emitted events in order, in the
// background.
type emitter struct {
	ch   chan events.Event
	done chan struct{}
	once sync.Once
	d    *deriver
}

func newEmitter(ctx context.Context, d *deriver, pub *Publisher, log *slog.Logger) *emitter {
	em := &emitter{ch: make(chan events.Event, 256), done: make(chan struct{}), d: d}
	go func() {
		defer close(em.done)
		for e := range em.ch {
			// Best effort: a lost progress event is not worth failing the
			// work for.
			if err := pub.Publish(ctx, e); err != nil {
				log.Debug("publishing an emitted event failed", "event_type", string(e.Type()), "error", err)
			}
		}
	}()
	return em
}

func (em *emitter) emit(p events.Payload) {
	em.ch <- em.d.derive(events.New(p), time.Now())
}

// close waits until everything emitted is published.
func (em *emitter) close() {
	em.once.Do(func() { close(em.ch) })
	<-em.done
}
