// Package resolver is Stevedore's source manager service. It consumes
// source.resolve.requested, parses the identifier of any BuildKit scheme,
// and emits source.resolved plus cachekey.requested for index 0 (for the
// service that handles the scheme), or source.failed with BuildKit's message.
package resolver

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

// Config configures the resolver.
type Config struct {
	// Instance names this replica in event sources and logs. Empty means
	// the host name.
	Instance string
	// Platform is filled into requests that name none. Zero means the
	// platform this process runs on.
	Platform ocispec.Platform
	// Concurrency is how many requests this replica handles at once. Zero
	// means 16.
	Concurrency int
	// Consumer is the consumer definition. Zero means bus.ResolverConsumer().
	Consumer bus.Consumer
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
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
	// Observe is where metrics and readiness go (service.Serve gives a
	// binary\'s); zero for nowhere.
	Observe service.Observe
	// StopGrace is how long the work in flight may go on once Run's ctx
	// ends, before it is cut short and handed back to the other replicas
	// (bus.WorkerConfig.StopGrace). Zero means bus.DefaultStopGrace;
	// negative waits for it.
	StopGrace time.Duration
	// StartTimeout is how long Run waits at start for a JetStream that
	// is loaded, electing or not up yet (service.Spec.StartTimeout).
	// Zero means bus.DefaultStartTimeout.
	StartTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance, _ = os.Hostname()
	}
	if c.Platform.OS == "" {
		c.Platform = platforms.DefaultSpec()
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.Consumer.Name == "" {
		c.Consumer = bus.ResolverConsumer()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration the service cannot run with.
func (c Config) Validate() error {
	if c.Concurrency < 0 {
		return errors.New("resolver: negative concurrency")
	}
	return c.Consumer.Validate()
}

// Service is one resolver replica.
type Service struct {
	js  jetstream.JetStream
	cfg Config
}

// New returns a resolver replica that uses js.
func New(js jetstream.JetStream, cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{js: js, cfg: cfg}, nil
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	spec := service.Spec{
		Component:      events.ComponentResolver,
		Instance:       s.cfg.Instance,
		Consumer:       s.cfg.Consumer,
		Concurrency:    s.cfg.Concurrency,
		Provision:      s.cfg.Provision,
		Replicas:       s.cfg.Replicas,
		EventsMaxBytes: s.cfg.EventsMaxBytes,
		DLQMaxBytes:    s.cfg.DLQMaxBytes,
		Logger:         s.cfg.Logger,
		Observe:        s.cfg.Observe,
		StopGrace:      s.cfg.StopGrace,
		StartTimeout:   s.cfg.StartTimeout,
	}
	h := NewHandler(s.cfg.Platform)
	return service.Run(ctx, s.js, spec, func(w *bus.Worker) {
		w.Handle(events.TypeSourceResolveRequested, bus.Typed(h.Resolve))
	})
}
