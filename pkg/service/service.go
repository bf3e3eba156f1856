// Package service is what every Stevedore service shares around its
// handlers: its identity, the worker with the standard middleware, the
// dead-letter mover, provisioning at start, and the process around it all
// in a binary.
//
// Vocabulary: a service is a component ("resolver", "puller") running as
// one or more replicas; each replica has an instance name, and the events
// it emits have the CloudEvents source /stevedore/<component>/<instance>.
// Run is one replica's life: provision (if asked), then the worker and the
// DLQ mover until ctx ends. A service says only what is its own in a Def
// (its name, its defaults, its setup: what a replica opens and the
// handlers it registers); Def.New makes its replica (a Service) and
// Def.Member its member of a fleet. StartFleet assembles services (each
// service's Member) each on its own connection, every member's Config
// taking the fleet's Settings where it leaves fields zero (the Replica's,
// and the shared ones by name): the embedded stack, the test fleet, and a
// binary's fleet of one (Main).
// Serve is a binary's life: connect to NATS, run until SIGINT or SIGTERM.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/middleware"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lease"
)

// Replica is how one replica of a service runs: the fields every service's
// Config embeds, and Run's share of a Spec.
type Replica struct {
	// Instance names the replica in event sources, leases and logs. Empty
	// means the service's default (the host name, with the process id for
	// some).
	Instance string
	// Concurrency is how many messages the replica handles at once. Zero
	// means the service's default.
	Concurrency int
	// Consumer is the service's consumer definition. Zero means the
	// service's (bus.ResolverConsumer() and the like).
	Consumer bus.Consumer
	// Backoff is the redelivery delay after a retryable failure. Nil means
	// the runtime's default.
	Backoff func(delivered int) time.Duration
	// Provision creates streams, buckets and consumers at start.
	Provision bool
	// Replicas is the replica count provisioning gives streams and buckets
	// (3 on a JetStream cluster); zero keeps what they have (1 for new ones).
	Replicas int
	// EventsMaxBytes bounds the events stream when provisioning
	// (bus.Topology.EventsMaxBytes): zero means
	// bus.DefaultEventsMaxBytes, negative no bound.
	EventsMaxBytes int64
	// DLQMaxBytes bounds the dead-letter and advisories streams when
	// provisioning (bus.Topology.DLQMaxBytes): zero means
	// bus.DefaultDLQMaxBytes, negative no bound.
	DLQMaxBytes int64
	// Logger receives logs; Run adds the service and instance to it. Nil
	// means slog.Default().
	Logger *slog.Logger
	// Observe is where metrics and readiness go (Serve gives a binary's);
	// zero for nowhere.
	Observe Observe
	// StopGrace is how long the work in flight may go on once Run's ctx
	// ends, before it is cut short and handed back to the other replicas
	// (bus.WorkerConfig.StopGrace). Zero means bus.DefaultStopGrace;
	// negative waits for it.
	StopGrace time.Duration
	// StartTimeout is how long the replica waits at start for a JetStream
	// that is loaded, electing or not up yet, retrying its lookups and
	// provisioning (see Patient). Zero means bus.DefaultStartTimeout;
	// negative waits no more than one attempt.
	StartTimeout time.Duration
}

// Default fills the fields of r a service gives defaults when they are
// zero: d's Instance, Concurrency and Consumer, and slog.Default() as the
// Logger.
func (r *Replica) Default(d Replica) {
	if r.Instance == "" {
		r.Instance = d.Instance
	}
	if r.Concurrency == 0 {
		r.Concurrency = d.Concurrency
	}
	if r.Consumer.Name == "" {
		r.Consumer = d.Consumer
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
}

// HostPID is the host name and the process id ("node-1-4242"): a replica
// name no other process on the machine has.
func HostPID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// Spec describes one replica to Run.
type Spec struct {
	// Component is the service's name, e.g. "puller". Required.
	Component string
	// Replica is how it runs; Instance and Consumer are required.
	Replica
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

// Patient returns js for what the replica sets up at start: its stream,
// consumer and bucket lookups and provisioning wait out a busy or electing
// cluster, with a warning in the log for each retry, until ctx ends or
// StartTimeout has passed since this call (bus.Patient). Run calls it once
// and hands the result to the service's setup (Setup.JetStream).
func (s Spec) Patient(js jetstream.JetStream) jetstream.JetStream {
	timeout := s.StartTimeout
	if timeout == 0 {
		timeout = bus.DefaultStartTimeout
	}
	return bus.Patient(js, bus.Patience{Until: time.Now().Add(timeout), Logger: s.Log()})
}

// Setup is what Run hands a service once the topology is provisioned:
// the worker to register its handlers on, and Defer for what must stop
// after the worker has.
type Setup struct {
	// Worker takes the service's handlers (Handle).
	Worker *bus.Worker
	// Log is the replica's logger (Spec.Log).
	Log *slog.Logger
	// JetStream is the replica's connection for what the service sets up
	// (buckets, leases, flights): patient at start (Spec.Patient), so a
	// busy or electing cluster is waited out rather than failing the
	// replica.
	JetStream jetstream.JetStream
	// Running is the same connection without the start's patience: for
	// what the service does once it runs (publishing, replaying a build,
	// asking a client's session).
	Running  jetstream.JetStream
	instance string
	stops    []func()
}

// Flight opens a single flight across the fleet (lease.Flight) whose
// results live in resultsBucket and whose leases, in events.BucketLeases,
// the replica holds under its instance name for ttl (zero: 30s).
func (s *Setup) Flight(ctx context.Context, resultsBucket string, ttl time.Duration) (*lease.Flight, error) {
	leases, err := lease.NewManager(ctx, s.JetStream, lease.Config{Bucket: events.BucketLeases, Holder: s.instance, TTL: ttl})
	if err != nil {
		return nil, err
	}
	return lease.NewFlight(ctx, s.JetStream, leases, resultsBucket)
}

// Defer runs stop when Run returns, after the worker and the DLQ mover
// have stopped; the last deferred runs first.
func (s *Setup) Defer(stop func()) { s.stops = append(s.stops, stop) }

func (s *Setup) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

// Run is one replica's life. It provisions the topology if asked (once,
// before the service binds to a bucket), then calls setup, which opens
// what the service needs and registers its handlers on a worker (with
// Recover and Logging middleware), and runs that worker, with a DLQ mover
// beside it, until ctx ends or one of them fails. Provisioning, binding
// the consumers and the service's setup go through spec.Patient(js).
func Run(ctx context.Context, js jetstream.JetStream, spec Spec, setup func(ctx context.Context, s *Setup) error) error {
	if spec.Component == "" || spec.Instance == "" {
		return errors.New("service: component and instance are required")
	}
	log := spec.Log()
	running := js // without the start's patience: the lag poller and what the service does once it runs
	js = spec.Patient(js)
	if spec.Provision {
		if err := bus.Provision(ctx, js, bus.Topology{Replicas: spec.Replicas, EventsMaxBytes: spec.EventsMaxBytes, DLQMaxBytes: spec.DLQMaxBytes}); err != nil {
			return fmt.Errorf("%s: %w", spec.Component, err)
		}
	}
	mw := []bus.Middleware{middleware.Recover(log), middleware.Logging(log)}
	if spec.Observe.Metrics != nil {
		m, err := middleware.Metrics(spec.Observe.Metrics, spec.Component)
		if err != nil {
			return fmt.Errorf("%s: %w", spec.Component, err)
		}
		mw = append(mw, m)
	}
	w, err := bus.NewWorker(js, bus.WorkerConfig{
		Consumer:    spec.Consumer,
		Source:      spec.Source(),
		Concurrency: spec.Concurrency,
		Backoff:     spec.Backoff,
		Logger:      log,
		Middleware:  mw,
		StopGrace:   spec.StopGrace,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Component, err)
	}
	s := &Setup{Worker: w, Log: log, JetStream: js, Running: running, instance: spec.Instance}
	defer s.stop()
	if err := setup(ctx, s); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	g.Go(func() error { return bus.NewDLQ(js, spec.Source(), log).Run(ctx) })
	if spec.Observe.Metrics != nil || spec.Observe.Health != nil {
		g.Go(func() error { return consumerLag(ctx, running, spec.Component, spec.Consumer.Name, spec.Observe, log) })
	}
	return g.Wait()
}

// Serve is a service binary's main: it connects to the NATS server at url
// (reconnecting forever), serves /metrics and /healthz on httpAddr (none
// when empty), calls run with where to report them, and cancels run's
// context on SIGINT or SIGTERM.
func Serve(url, name, httpAddr string, run func(ctx context.Context, js jetstream.JetStream, obs Observe) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, js, err := bus.Connect(url, name)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := newRegistry()
	obs := Observe{Metrics: reg, Health: NewHealth(checkConsumer)}
	obs.Health.attach(nc)
	if httpAddr != "" {
		shutdown, err := serveHTTP(ctx, httpAddr, reg, obs.Health)
		if err != nil {
			return err
		}
		defer func() { _ = shutdown() }()
	}
	return run(ctx, js, obs)
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

// List splits a comma-separated flag value, dropping empty items: "" is
// no item.
func List(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
