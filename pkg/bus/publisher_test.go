package bus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// An event published while no stream answers (a leader being elected, a
// stream being created) is sent again until one does, and stored once.
func TestPublishResendsUntilAcknowledged(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	if err := env.JS.DeleteStream(t.Context(), events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	e := events.Event{ID: "resend-1", BuildID: "resend", Source: "/test", Time: time.Now(),
		Data: events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}}}
	// Every attempt crosses the server, stream or not: a plain
	// subscription counts them.
	var attempts atomic.Int32
	sub, err := env.NC.Subscribe(events.BuildFilter("resend"), func(*nats.Msg) { attempts.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := env.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- bus.NewPublisher(env.JS).Publish(t.Context(), e) }()
	// The first attempt went out while there was no stream: the stream
	// comes back only after it.
	for attempts.Load() == 0 {
		select {
		case err := <-done:
			t.Fatalf("Publish returned %v with no stream", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	ctx, cancel := context.WithTimeoutCause(t.Context(), 10*time.Second, errors.New("provision timed out"))
	defer cancel()
	if err := bus.Provision(ctx, env.JS, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish = %v after the stream came back", err)
	}
	if took := time.Since(start); took >= bus.PublishTimeout {
		t.Errorf("Publish took %v", took)
	}
	// The resend was acknowledged; its copy to the plain subscription
	// may trail the acknowledgement.
	for deadline := time.Now().Add(5 * time.Second); attempts.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := attempts.Load(); n < 2 {
		t.Errorf("%d publish attempts, want the first one and at least one resend", n)
	}
	stream, err := env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(events.BuildFilter("resend")))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("%d messages stored, want 1", info.State.Msgs)
	}
}
