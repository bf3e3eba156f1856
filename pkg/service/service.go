// Package service is what every Stevedore service shares around its
// handlers: its identity, the worker with the standard middleware, the
// dead-letter mover, provisioning at start, and the process around it all
// in a binary.
//
// Vocabulary: a service is a component ("resolver", "puller") running as
// one or more replicas; each replica has an instance name, and the events
// it emits have the CloudEvents source /stevedore/<component>/<instance>.
// Run is one replica's life: provision (if asked), then the worker and the
// DLQ mover until ctx ends. Serve is a binary's life: connect to NATS, run
// until SIGINT or SIGTERM.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/middleware"
)

// Spec describes one replica to Run.
type Spec struct {
	// Component is the service's name, e.g. "puller". Required.
	Component string
	// Instance names the replica. Required.
	Instance string
	// Consumer is the service's consumer definition. Required.
	Consumer bus.Consumer
	// Concurrency is how many messages the replica handles at once. Zero
	// means the runtime's default.
	Concurrency int
	// Backoff is the redelivery delay after a retryable failure. Nil means
	// the runtime's default.
	Backoff func(delivered int) time.Duration
	// Provision creates streams, buckets and consumers before serving.
	Provision bool
	// Logger receives logs; Run adds the service and instance to it. Nil
	// means slog.Default().
	Logger *slog.Logger
}

// Source is the CloudEvents source of the replica's events.
func (s Spec) Source() string { return "/stevedore/" + s.Component + "/" + s.Instance }

// Log is the replica's logger, tagged with the service and the instance.
func (s Spec) Log() *slog.Logger {
	l := s.Logger
	if l == nil {
		l = slog.Default()
	}
	return l.With("service", s.Component, "instance", s.Instance)
}

// Run provisions the topology if asked, registers the service's handlers on
// a worker (with Recover and Logging middleware) and runs it, with a DLQ
// mover beside it, until ctx ends or one of them fails.
func Run(ctx context.Context, js jetstream.JetStream, spec Spec, register func(*bus.Worker)) error {
	if spec.Component == "" || spec.Instance == "" {
		return errors.New("service: component and instance are required")
	}
	log := spec.Log()
	if spec.Provision {
		if err := bus.Provision(ctx, js, bus.Topology{}); err != nil {
			return fmt.Errorf("%s: %w", spec.Component, err)
		}
	}
	w, err := bus.NewWorker(js, bus.WorkerConfig{
		Consumer:    spec.Consumer,
		Source:      spec.Source(),
		Concurrency: spec.Concurrency,
		Backoff:     spec.Backoff,
		Logger:      log,
		Middleware:  []bus.Middleware{middleware.Recover(log), middleware.Logging(log)},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Component, err)
	}
	register(w)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	g.Go(func() error { return bus.NewDLQ(js, spec.Source(), log).Run(ctx) })
	return g.Wait()
}

// Serve is a service binary's main: it connects to the NATS server at url
// (reconnecting forever), calls run, and cancels run's context on SIGINT or
// SIGTERM.
func Serve(url, name string, run func(ctx context.Context, js jetstream.JetStream) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, js, err := bus.Connect(url, name)
	if err != nil {
		return err
	}
	defer nc.Close()
	return run(ctx, js)
}

// Env returns the environment variable key, or def when it is not set: the
// default of a binary's flag.
func Env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// Platform parses and normalises a platform flag such as "linux/arm64/v8"
// (which becomes linux/arm64, as BuildKit's clients send it); empty gives
// the zero platform, which services read as "this host's".
func Platform(s string) (ocispec.Platform, error) {
	if s == "" {
		return ocispec.Platform{}, nil
	}
	p, err := platforms.Parse(s)
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("platform %q: %w", s, err)
	}
	return platforms.Normalize(p), nil
}
