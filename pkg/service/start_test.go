package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/broker/brokertest"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lease"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

// logBuffer is a logger's output, safe to read while the replica writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// retryLogged is what Patient logs before it tries a call again.
const retryLogged = "JetStream not ready; trying again"

// startLikeAService does what a service's Run does: runs the replica,
// whose setup binds the lease bucket through the connection Run hands it
// (patient at start) and whose handler answers a cache key request with a
// hit.
func startLikeAService(ctx context.Context, js jetstream.JetStream, spec service.Spec) error {
	return service.Run(ctx, js, spec, func(ctx context.Context, s *service.Setup) error {
		if _, err := lease.NewManager(ctx, s.JetStream, lease.Config{Bucket: events.BucketLeases, Holder: spec.Instance}); err != nil {
			return err
		}
		s.Worker.Handle(events.TypeCacheKeyRequested, bus.Typed(func(_ context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
			return []events.Event{events.New(events.CacheHit{Source: in.Source})}, nil
		}))
		return nil
	})
}

// A replica started while its cluster has no quorum (two of three nodes
// down: no meta leader, no stream leaders) waits, logging its retries,
// and serves once a node is back, instead of exiting at its first lookup;
// when the cluster loses its quorum again while the replica serves, the
// replica rides out the missed heartbeats and serves once it is back.
//
// Not parallel: the cluster runs alone.
func TestRunWaitsForAClusterWithoutQuorum(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	nc, err := nats.Connect(c.ClientURLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeoutCause(t.Context(), 4*time.Minute, errors.New("test took over 4 minutes"))
	defer cancel()
	patient := bus.Patient(js, bus.Patience{Until: time.Now().Add(time.Minute), Logger: quiet})
	if err := bus.Provision(ctx, patient, bus.Topology{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	loseQuorum := func() {
		t.Helper()
		c.Stop(t, "node-2")
		c.Stop(t, "node-3")
		// The premise: the cluster cannot answer a consumer lookup now.
		for {
			lctx, lcancel := context.WithTimeoutCause(ctx, 5*time.Second, errors.New("consumer lookup timed out"))
			_, err := js.Consumer(lctx, events.StreamEvents, bus.PullerConsumer().Name)
			lcancel()
			if bus.Transient(err) {
				return
			}
			if context.Cause(ctx) != nil {
				t.Fatalf("the cluster kept answering without a quorum: %v", context.Cause(ctx))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	loseQuorum()

	logs := &logBuffer{}
	spec := service.Spec{Component: "puller", Replica: service.Replica{Instance: "i1", Consumer: bus.PullerConsumer(),
		Logger: slog.New(slog.NewTextHandler(logs, nil)), StartTimeout: 3 * time.Minute,
		Backoff: bus.ExponentialBackoff(10*time.Millisecond, 50*time.Millisecond)}}
	rctx, stop := context.WithCancelCause(ctx)
	done := make(chan error, 1)
	go func() { done <- startLikeAService(rctx, js, spec) }()
	defer func() {
		stop(errors.New("test over"))
		if err := <-done; err != nil {
			t.Errorf("replica stopped with %v", err)
		}
	}()
	// alive fails the test when the replica has exited or ctx ended.
	alive := func(what string) {
		t.Helper()
		select {
		case err := <-done:
			done <- err
			t.Fatalf("replica exited before %s: %v\n%s", what, err, logs)
		case <-ctx.Done():
			t.Fatalf("%s: %v\n%s", what, context.Cause(ctx), logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
	serves := func(buildID string) {
		t.Helper()
		req := events.New(events.CacheKeyRequested{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}})
		req.ID, req.BuildID, req.Source, req.Time = buildID+"-request", buildID, "/stevedore/test", time.Now()
		for {
			// Publish sends again until the stream answers; a call that
			// gives up may still have been stored, and then the next one
			// meets its own request's id.
			err := bus.NewPublisher(js).Publish(ctx, req)
			if err == nil || errors.Is(err, bus.ErrDuplicateID) {
				break
			}
			alive(fmt.Sprintf("the request of %s was stored (last: %v)", buildID, err))
		}
		for {
			alive("the replica answered " + buildID)
			rctx, rcancel := context.WithTimeoutCause(ctx, 5*time.Second, errors.New("replay timed out"))
			stored, err := bus.Replay(rctx, js, buildID)
			rcancel()
			if err != nil {
				continue
			}
			for _, ev := range stored {
				if ev.Type() == events.TypeCacheHit {
					if ev.Source != spec.Source() {
						t.Errorf("hit from %q", ev.Source)
					}
					return
				}
			}
		}
	}

	// The premise: the replica met a cluster that could not answer.
	for !strings.Contains(logs.String(), retryLogged) {
		alive("the cluster came back")
	}
	c.Restart(t, "node-2")
	serves("b1")

	loseQuorum()
	for !strings.Contains(logs.String(), heartbeatLogged) {
		alive("the quorum came back")
	}
	c.Restart(t, "node-2")
	serves("b2")
}

// heartbeatLogged is what a worker logs when its consumer goes quiet.
const heartbeatLogged = "no heartbeat from the consumer"

// A replica whose start meets an error that waiting cannot fix fails at
// once, without a retry, however long it was allowed to wait.
func TestRunFailsAtOnceOnAPermanentError(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		setup func(t *testing.T, env *bustest.Env)
		spec  service.Spec
		want  error
	}{
		"consumer missing": {
			spec: service.Spec{Replica: service.Replica{Consumer: bus.Consumer{Name: "nobody-provisioned-me", Types: bus.PullerConsumer().Types}}},
			want: jetstream.ErrConsumerNotFound,
		},
		"lease bucket configured as something else": {
			setup: func(t *testing.T, env *bustest.Env) {
				if err := env.JS.DeleteKeyValue(t.Context(), events.BucketLeases); err != nil {
					t.Fatal(err)
				}
				if _, err := env.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: "KV_" + events.BucketLeases, Subjects: []string{"not.a.bucket"}}); err != nil {
					t.Fatal(err)
				}
			},
			spec: service.Spec{Replica: service.Replica{Consumer: bus.PullerConsumer()}},
			want: jetstream.ErrBadBucket,
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := bustest.Start(t, bus.Topology{})
			if tc.setup != nil {
				tc.setup(t, env)
			}
			logs := &logBuffer{}
			spec := tc.spec
			spec.Component, spec.Instance, spec.StartTimeout = "puller", "i1", time.Hour
			spec.Logger = slog.New(slog.NewTextHandler(logs, nil))
			ctx, cancel := context.WithTimeoutCause(t.Context(), time.Minute, errors.New("the replica was still starting after a minute"))
			defer cancel()
			err := startLikeAService(ctx, env.JS, spec)
			if !errors.Is(err, tc.want) {
				t.Fatalf("start = %v, want %v", err, tc.want)
			}
			if strings.Contains(logs.String(), retryLogged) {
				t.Errorf("a permanent error was retried:\n%s", logs)
			}
		})
	}
}
