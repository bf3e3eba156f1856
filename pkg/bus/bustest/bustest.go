// Package bustest starts a real embedded NATS JetStream server per test,
// provisioned with Stevedore's topology, and offers small helpers to publish
// events and wait for the ones a build produces.
package bustest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Env is one test's server and a provisioned client connection.
type Env struct {
	// Server is the embedded server; it listens on 127.0.0.1 at a random
	// port.
	Server *broker.Server
	// NC and JS are a connection for the test itself.
	NC *nats.Conn
	JS jetstream.JetStream
}

// Start starts a server with its store in t.TempDir(), provisions topo and
// stops everything at the end of the test.
func Start(t testing.TB, topo bus.Topology) *Env {
	t.Helper()
	srv, err := broker.Start(broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &Env{Server: srv}
	e.NC, e.JS = e.Connect(t, "test")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 10*time.Second, errors.New("provision timed out"))
	defer cancel()
	if err := bus.Provision(ctx, e.JS, topo); err != nil {
		t.Fatal(err)
	}
	return e
}

// Connect opens another TCP connection to the server (a replica has its
// own), closed at the end of the test. It reconnects forever, as services do.
func (e *Env) Connect(t testing.TB, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(e.Server.ClientURL(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Publish publishes e as the client would.
func (e *Env) Publish(t testing.TB, ev events.Event) {
	t.Helper()
	if err := bus.NewPublisher(e.JS).Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
}

// Stored returns what the events stream holds of buildID now, read from
// the stream itself (bus.Replay): unlike a Recorder, it does not trail
// the publishes the stream has acknowledged.
func (e *Env) Stored(t testing.TB, buildID string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(t.Context(), 10*time.Second, errors.New("replay timed out"))
	defer cancel()
	es, err := bus.Replay(ctx, e.JS, buildID)
	if err != nil {
		t.Fatalf("replay %s: %v", buildID, err)
	}
	return es
}

// Request publishes the event that starts a build and returns it.
func (e *Env) Request(t testing.TB, buildID string, p events.Payload) events.Event {
	t.Helper()
	ev := events.New(p)
	ev.ID, ev.BuildID, ev.Source, ev.Time = buildID+"-request", buildID, "/stevedore/test", time.Now()
	e.Publish(t, ev)
	return ev
}

// Recorder collects a build's events as a watcher sees them.
type Recorder struct {
	mu     sync.Mutex
	events []events.Event
	errs   []error
	notify chan struct{}
}

// Record starts watching buildID and records every event until the end of
// the test.
func (e *Env) Record(t testing.TB, buildID string) *Recorder {
	t.Helper()
	w, err := bus.WatchBuild(t.Context(), e.JS, buildID)
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{notify: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := w.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			r.mu.Lock()
			if err != nil {
				r.errs = append(r.errs, err)
			} else {
				r.events = append(r.events, ev)
			}
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return r
}

// Events returns what was recorded so far.
func (r *Recorder) Events() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.events...)
}

// Errors returns the messages that did not decode.
func (r *Recorder) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// OfType returns the recorded events of type typ.
func (r *Recorder) OfType(typ events.Type) []events.Event {
	var out []events.Event
	for _, e := range r.Events() {
		if e.Type() == typ {
			out = append(out, e)
		}
	}
	return out
}

// Wait blocks until an event of one of the types is recorded and returns
// the first such event, failing the test after timeout.
func (r *Recorder) Wait(t testing.TB, timeout time.Duration, types ...events.Type) events.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		for _, e := range r.Events() {
			for _, typ := range types {
				if e.Type() == typ {
					return e
				}
			}
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("no %v within %s; recorded: %v", types, timeout, Summary(r.Events()))
			return events.Event{}
		}
	}
}

// WaitActive is Wait for work whose length depends on the machine's
// load: it fails only when the build records nothing new for idle (it is
// stuck, not slow), or after limit.
func (r *Recorder) WaitActive(t testing.TB, idle, limit time.Duration, types ...events.Type) events.Event {
	t.Helper()
	end := time.After(limit)
	seen := -1
	quiet := time.NewTimer(idle)
	defer quiet.Stop()
	for {
		es := r.Events()
		for _, e := range es {
			for _, typ := range types {
				if e.Type() == typ {
					return e
				}
			}
		}
		if len(es) != seen {
			seen = len(es)
			quiet.Reset(idle)
		}
		select {
		case <-r.notify:
		case <-quiet.C:
			t.Fatalf("no %v, and nothing recorded for %s; recorded: %v", types, idle, Summary(es))
			return events.Event{}
		case <-end:
			t.Fatalf("no %v within %s; recorded: %v", types, limit, Summary(es))
			return events.Event{}
		}
	}
}

// Summary renders events as "type(id)" for failure messages.
func Summary(es []events.Event) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		s := events.NameOf(e.Type())
		if f, ok := e.Data.(events.SourceFailed); ok {
			s += "(" + f.Reason + ")"
		}
		out = append(out, s)
	}
	return out
}
