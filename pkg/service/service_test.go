package service_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestRunServesRecoversAndStops(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	spec := service.Spec{Component: "puller", Replica: service.Replica{Instance: "i1", Consumer: bus.PullerConsumer(), Logger: quiet,
		Backoff: bus.ExponentialBackoff(10*time.Millisecond, 50*time.Millisecond)}}
	if got := spec.Source(); got != "/stevedore/puller/i1" {
		t.Errorf("Source = %q", got)
	}
	calls := 0
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, env.JS, spec, func(_ context.Context, s *service.Setup) error {
			s.Worker.Handle(events.TypeCacheKeyRequested, bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
				calls++
				if calls == 1 {
					panic("first delivery panics") // the standard middleware recovers
				}
				return []events.Event{events.New(events.CacheHit{Source: in.Source})}, nil
			}))
			return nil
		})
	}()
	rec := env.Record(t, "b1")
	env.Request(t, "b1", events.CacheKeyRequested{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}})
	hit := rec.Wait(t, 10*time.Second, events.TypeCacheHit)
	if hit.Source != spec.Source() || calls != 2 {
		t.Errorf("hit from %q after %d calls", hit.Source, calls)
	}
	cancel(errors.New("test over"))
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// nothing is a service's setup that registers nothing.
func nothing(context.Context, *service.Setup) error { return nil }

func TestRunRejectsIncompleteSpecs(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	if err := service.Run(t.Context(), env.JS, service.Spec{Replica: service.Replica{Consumer: bus.PullerConsumer()}}, nothing); err == nil {
		t.Error("Run without component and instance succeeded")
	}
	bad := service.Spec{Component: "x", Replica: service.Replica{Instance: "y"}}
	if err := service.Run(t.Context(), env.JS, bad, nothing); err == nil {
		t.Error("Run with an empty consumer succeeded")
	}
}

func TestPlatform(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]ocispec.Platform{
		"":               {},
		"linux/arm64":    {OS: "linux", Architecture: "arm64"},
		"linux/arm64/v8": {OS: "linux", Architecture: "arm64"},
		"linux/arm/v7":   {OS: "linux", Architecture: "arm", Variant: "v7"},
	} {
		got, err := service.Platform(in)
		if err != nil || got.OS != want.OS || got.Architecture != want.Architecture || got.Variant != want.Variant {
			t.Errorf("Platform(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := service.Platform("not a platform!"); err == nil {
		t.Error("Platform accepted garbage")
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("STEVEDORE_TEST_ENV", "set")
	if got := service.Env("STEVEDORE_TEST_ENV", "default"); got != "set" {
		t.Errorf("Env = %q", got)
	}
	if got := service.Env("STEVEDORE_TEST_ENV_UNSET", "default"); got != "default" {
		t.Errorf("Env unset = %q", got)
	}
}

// Run with Observe: the consumer check passes once the consumer is bound,
// handled events are counted, the backlog is a gauge, and the healthcheck
// a container runs follows /healthz.
func TestRunObserved(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	reg := prometheus.NewRegistry()
	health := service.NewHealth("consumer")
	if health.Err() == nil {
		t.Fatal("a fresh Health is ready")
	}
	srv := httptest.NewServer(health)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code := service.Healthcheck(t.Context(), addr); code != 1 {
		t.Errorf("Healthcheck before ready = %d, want 1", code)
	}
	spec := service.Spec{Component: "puller", Replica: service.Replica{Instance: "i1", Consumer: bus.PullerConsumer(), Logger: quiet,
		Observe: service.Observe{Metrics: reg, Health: health}}}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(errors.New("test over"))
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, env.JS, spec, func(_ context.Context, s *service.Setup) error {
			s.Worker.Handle(events.TypeCacheKeyRequested, bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
				return []events.Event{events.New(events.CacheHit{Source: in.Source})}, nil
			}))
			return nil
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for health.Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10s: %v", health.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := service.Healthcheck(t.Context(), addr); code != 0 {
		t.Errorf("Healthcheck when ready = %d, want 0", code)
	}
	rec := env.Record(t, "b1")
	env.Request(t, "b1", events.CacheKeyRequested{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}})
	rec.Wait(t, 10*time.Second, events.TypeCacheHit)
	deadline = time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(counterOf(t, reg, "stevedore_puller_events_handled_total")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the handled event was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"stevedore_puller_consumer_pending_messages", "stevedore_puller_consumer_ack_pending_messages", "stevedore_puller_handler_duration_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
	health.Set("consumer", errors.New("gone"))
	if code := service.Healthcheck(t.Context(), addr); code != 1 {
		t.Errorf("Healthcheck after a failure = %d, want 1", code)
	}
	cancel(errors.New("test over"))
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// counterOf returns the one series of a counter family as a collector.
func counterOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(total)
	return c
}

// Finding 6: a service binary takes the streams' byte bounds from its
// flags, and from STEVEDORE_EVENTS_MAX_BYTES and STEVEDORE_DLQ_MAX_BYTES
// when no flag is given.
func TestSecurityStreamBoundFlags(t *testing.T) {
	t.Setenv("STEVEDORE_EVENTS_MAX_BYTES", "12345")
	t.Setenv("STEVEDORE_DLQ_MAX_BYTES", "999")
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	c := service.RegisterCommon(fs)
	if err := fs.Parse([]string{"-dlq-max-bytes=-1"}); err != nil {
		t.Fatal(err)
	}
	if c.EventsMaxBytes != 12345 || c.DLQMaxBytes != -1 {
		t.Errorf("events %d, dlq %d: want 12345 from the environment, -1 from the flag", c.EventsMaxBytes, c.DLQMaxBytes)
	}
}
