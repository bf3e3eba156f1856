package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Publisher publishes events to the events stream and waits for the
// stream's acknowledgement of each.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// Publish encodes e (binary mode, Nats-Msg-Id = e.ID) and publishes it. A
// duplicate of an event the stream already holds is not an error: the
// stream drops it, which is the point of deterministic ids.
func (p *Publisher) Publish(ctx context.Context, e events.Event) error {
	return p.PublishAll(ctx, []events.Event{e})
}

// PublishAll publishes es concurrently and waits for every acknowledgement.
// It returns the first error; events that were acknowledged stay published,
// and republishing them later is harmless.
func (p *Publisher) PublishAll(ctx context.Context, es []events.Event) error {
	if len(es) == 0 {
		return nil
	}
	if len(es) == 1 {
		m, err := events.Encode(es[0])
		if err != nil {
			return Invalid(err)
		}
		_, err = p.js.PublishMsg(ctx, toNATS(m), jetstream.WithExpectStream(events.StreamEvents))
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(es))
	for _, e := range es {
		m, err := events.Encode(e)
		if err != nil {
			return Invalid(err)
		}
		f, err := p.js.PublishMsgAsync(toNATS(m), jetstream.WithExpectStream(events.StreamEvents))
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		futures = append(futures, f)
	}
	var errs []error
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("publish %s: %w", f.Msg().Subject, err))
		case <-ctx.Done():
			return fmt.Errorf("publish: %w", context.Cause(ctx))
		}
	}
	return errors.Join(errs...)
}
