package resolver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

const (
	instance   = "r1"
	sourceName = "/stevedore/resolver/" + instance
	waitFor    = 10 * time.Second
)

// runService starts a resolver on js and registers a cleanup that stops it
// and checks that Run returned nil.
func runService(t *testing.T, js jetstream.JetStream, cfg resolver.Config) {
	t.Helper()
	svc, err := resolver.New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel(errors.New("test over"))
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run after cancel = %v, want nil", err)
				}
			case <-time.After(waitFor):
				t.Errorf("Run did not return within %s of cancel", waitFor)
			}
		})
	})
}

// consumerIdle waits until the consumer has nothing pending or unacked.
func consumerIdle(t *testing.T, js jetstream.JetStream, name string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		cons, err := js.Consumer(t.Context(), events.StreamEvents, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: %d pending, %d unacked after %s", name, info.NumPending, info.NumAckPending, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// envelope is the part of an event the runtime fills in.
type envelope struct {
	ID, Source, BuildID, CausationID string
	Type                             events.Type
}

func envelopeOf(e events.Event) envelope {
	return envelope{ID: e.ID, Source: e.Source, BuildID: e.BuildID, CausationID: e.CausationID, Type: e.Type()}
}

// derived is the envelope of the first output of type typ for req, as
// stored in env's stream.
func derived(t *testing.T, env *bustest.Env, req events.Event, typ events.Type) envelope {
	t.Helper()
	stream, err := env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(t.Context(), events.Subject(req.BuildID, req.Type()))
	if err != nil {
		t.Fatal(err)
	}
	return envelope{ID: events.DeriveID(bus.Cause(req.ID, m.Sequence), typ, 0), Source: sourceName, BuildID: req.BuildID, CausationID: req.ID, Type: typ}
}

func TestServiceOverBus(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	_, js := env.Connect(t, "resolver")
	runService(t, js, resolver.Config{Replica: service.Replica{Instance: instance, Logger: discard}, Platform: linuxAMD64})

	t.Run("builds", func(t *testing.T) {
		t.Run("resolved", func(t *testing.T) {
			t.Parallel()
			op := events.SourceOp{
				Identifier: "docker-image://docker.io/library/alpine:3.20",
				Attrs:      map[string]string{source.AttrImageResolveMode: "pull"},
			}
			rec := env.Record(t, "ok")
			req := env.Request(t, "ok", events.SourceResolveRequested{Source: op})
			rec.Wait(t, waitFor, events.TypeCacheKeyRequested)

			got := rec.Events()
			want := []envelope{
				envelopeOf(req),
				derived(t, env, req, events.TypeSourceResolved),
				derived(t, env, req, events.TypeCacheKeyRequested),
			}
			if diff := cmp.Diff(want, mapSlice(got, envelopeOf)); diff != "" {
				t.Fatalf("events (-want +got):\n%s", diff)
			}
			canonical := op
			canonical.Platform = &linuxAMD64
			payloads := []events.Payload{
				events.SourceResolveRequested{Source: op},
				events.SourceResolved{Source: canonical, Scheme: source.SchemeDockerImage, Handler: events.ComponentPuller},
				events.CacheKeyRequested{Source: canonical},
			}
			if diff := cmp.Diff(payloads, mapSlice(got, func(e events.Event) events.Payload { return e.Data })); diff != "" {
				t.Errorf("payloads (-want +got):\n%s", diff)
			}
		})
		t.Run("failed", func(t *testing.T) {
			t.Parallel()
			op := events.SourceOp{Identifier: "git://github.com/moby/buildkit#-x"}
			rec := env.Record(t, "bad")
			req := env.Request(t, "bad", events.SourceResolveRequested{Source: op})
			failed := rec.Wait(t, waitFor, events.TypeSourceFailed)

			if diff := cmp.Diff(derived(t, env, req, events.TypeSourceFailed), envelopeOf(failed)); diff != "" {
				t.Errorf("failed envelope (-want +got):\n%s", diff)
			}
			want := events.SourceFailed{
				Source:   op,
				Step:     events.TypeSourceResolveRequested,
				Reason:   `invalid git ref "-x"`,
				Code:     "invalid",
				Attempts: 1,
			}
			if diff := cmp.Diff(events.Payload(want), failed.Data); diff != "" {
				t.Errorf("failed payload (-want +got):\n%s", diff)
			}
			if got := bustest.Summary(rec.Events()); len(got) != 2 {
				t.Errorf("events = %v, want the request and source.failed only", got)
			}
		})
	})
	consumerIdle(t, js, events.ConsumerResolver)
}

// With Provision set, the service creates the topology itself on a bare
// server; without it, Run fails instead of waiting for a consumer that
// nobody will create.
func TestServiceProvision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		provision bool
	}{
		{"provision", true},
		{"no provision", false},
	} {
		provision := tc.provision
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := unprovisioned(t)
			cfg := resolver.Config{Replica: service.Replica{Instance: instance, Logger: discard, Provision: provision}, Platform: linuxAMD64}

			if !provision {
				svc, err := resolver.New(js, cfg)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("Run did not fail"))
				defer cancel()
				if err := svc.Run(ctx); err == nil || (!errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound)) {
					t.Fatalf("Run without a topology = %v, want a consumer or stream not found error", err)
				}
				return
			}

			runService(t, js, cfg)
			waitConsumer(t, js, events.ConsumerResolver)
			pub := bus.NewPublisher(js)
			req := events.New(events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20"}})
			req.ID, req.BuildID, req.Source, req.Time = "p-request", "p", "/stevedore/test", time.Now()
			w, err := bus.WatchBuild(t.Context(), js, "p")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(w.Stop)
			if err := pub.Publish(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			var types []events.Type
			for len(types) < 3 {
				e, err := w.Next()
				if err != nil {
					t.Fatal(err)
				}
				types = append(types, e.Type())
			}
			want := []events.Type{events.TypeSourceResolveRequested, events.TypeSourceResolved, events.TypeCacheKeyRequested}
			if diff := cmp.Diff(want, types); diff != "" {
				t.Errorf("event types (-want +got):\n%s", diff)
			}
		})
	}
}

// waitConsumer waits until a consumer exists.
// unprovisioned is a JetStream of a new embedded server on which nothing
// is provisioned, reached as the resolver.
func unprovisioned(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := broker.Start(broker.Config{DataDir: t.TempDir(), NoListen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("resolver")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func waitConsumer(t *testing.T, js jetstream.JetStream, name string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		_, err := js.Consumer(t.Context(), events.StreamEvents, name)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: %v after %s", name, err, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  resolver.Config
	}{
		{"negative concurrency", resolver.Config{Replica: service.Replica{Concurrency: -1}}},
		{"consumer without types", resolver.Config{Replica: service.Replica{Consumer: bus.Consumer{Name: "resolver"}}}},
		{"consumer with unknown type", resolver.Config{Replica: service.Replica{Consumer: bus.Consumer{Name: "resolver", Types: []events.Type{"nope"}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Logger = discard
			if _, err := resolver.New(nil, tc.cfg); err == nil {
				t.Errorf("New(%+v) = nil error", tc.cfg)
			}
		})
	}
}

func mapSlice[T, U any](in []T, fn func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, fn(v))
	}
	return out
}
