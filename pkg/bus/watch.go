package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// WatchHeartbeat is how often the server tells a watch it is alive; a
// watch that misses two recreates its consumer.
const WatchHeartbeat = 2 * time.Second

// Watch follows one build's events: first every stored event in order,
// then new ones as they arrive. It uses an ordered consumer, which leaves
// no state on the server and needs no acks.
type Watch struct {
	it jetstream.MessagesContext
}

// WatchBuild starts a watch of buildID's events.
func WatchBuild(ctx context.Context, js jetstream.JetStream, buildID string) (*Watch, error) {
	if err := events.ValidateBuildID(buildID); err != nil {
		return nil, failure.Invalid(err)
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.BuildFilter(buildID)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", buildID, err)
	}
	// A short heartbeat notices a consumer lost with its server (a cluster
	// node going away) within seconds; the client then recreates it.
	it, err := cons.Messages(jetstream.PullHeartbeat(WatchHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", buildID, err)
	}
	return &Watch{it: it}, nil
}

// Next blocks until the next event. A message that does not decode is
// returned as an error matching failure.ErrInvalid; the watch goes on after it.
// After Stop, Next returns jetstream.ErrMsgIteratorClosed.
func (w *Watch) Next() (events.Event, error) {
	msg, err := w.it.Next()
	if err != nil {
		return events.Event{}, err
	}
	e, err := events.Decode(events.Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
	if err != nil {
		return events.Event{}, failure.Invalid(fmt.Errorf("%s: %w", msg.Subject(), err))
	}
	return e, nil
}

// Stop ends the watch and unblocks Next.
func (w *Watch) Stop() { w.it.Stop() }

// Replay returns the events of buildID stored so far, in order: what a
// step that needs a build's history (the exporter of a build's results)
// reads. Messages that do not decode are skipped.
func Replay(ctx context.Context, js jetstream.JetStream, buildID string) ([]events.Event, error) {
	if err := events.ValidateBuildID(buildID); err != nil {
		return nil, failure.Invalid(err)
	}
	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", buildID, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(events.BuildFilter(buildID)))
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", buildID, err)
	}
	var stored uint64
	for _, n := range info.State.Subjects {
		stored += n
	}
	if stored == 0 {
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.BuildFilter(buildID)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", buildID, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", buildID, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var out []events.Event
	for read := uint64(0); read < stored; read++ {
		msg, err := it.Next()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return nil, cause
			}
			return nil, fmt.Errorf("replay %s: %w", buildID, err)
		}
		if e, err := events.Decode(events.Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}); err == nil {
			out = append(out, e)
		}
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			break
		}
	}
	return out, nil
}
