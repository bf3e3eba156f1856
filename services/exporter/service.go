// Package exporter is Stevedore's remote cache service. It consumes
// cache.export.requested: it builds BuildKit cache chains from the cache
// index (for every source, a root record per key, whose result is the
// source's layer chain), marshals them deterministically, writes the layer
// blobs (in parallel, skipping those the target has, mounting those the
// target registry holds elsewhere), then the cache config, then the
// manifest, and answers cache.exported with the manifest descriptor. It
// consumes cache.import.requested: it reads a BuildKit cache (image
// manifest, index or inline form), validates it with BuildKit's rules, and
// puts its records into the cache index with where their blobs are, so
// later resolves hit and snapshots read the cache's blobs.
//
// Targets and sources use buildctl's attribute syntax
// (type=local,dest=DIR / type=registry,ref=REF); see pkg/cachefmt. Bad
// input ends with cache.export.failed or cache.import.failed carrying
// BuildKit's error text.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/session"
)

// DefaultWindow is how many blobs an export writes at once by default
// (BuildKit pushes 4 at a time).
const DefaultWindow = 4

// Config configures the exporter.
type Config struct {
	// Instance names this replica in event sources and logs. Empty means
	// the host name plus the process id.
	Instance string
	// Registry configures registry access (credentials, insecure hosts).
	Registry registry.Config
	// Window bounds the blobs one export writes at once. Zero means
	// DefaultWindow.
	Window int
	// Concurrency is how many exports and imports this replica runs at
	// once. Zero means 2.
	Concurrency int
	// Consumer is the consumer definition. Zero means
	// bus.ExporterConsumer().
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
		host, _ := os.Hostname()
		c.Instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Concurrency == 0 {
		c.Concurrency = 2
	}
	if c.Consumer.Name == "" {
		c.Consumer = bus.ExporterConsumer()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration the service cannot run with.
func (c Config) Validate() error {
	if c.Window < 0 || c.Concurrency < 0 {
		return errors.New("exporter: negative window or concurrency")
	}
	return c.Consumer.Validate()
}

// Service is one exporter replica.
type Service struct {
	js  jetstream.JetStream
	cfg Config
}

// New returns an exporter replica that uses js.
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
		Component:    events.ComponentExporter,
		Instance:     s.cfg.Instance,
		Consumer:     s.cfg.Consumer,
		Concurrency:  s.cfg.Concurrency,
		Backoff:      s.cfg.Backoff,
		Logger:       s.cfg.Logger,
		Observe:      s.cfg.Observe,
		StopGrace:    s.cfg.StopGrace,
		StartTimeout: s.cfg.StartTimeout,
	}
	// What the replica sets up waits out a busy or electing cluster.
	js := spec.Patient(s.js)
	if s.cfg.Provision {
		if err := bus.Provision(ctx, js, bus.Topology{Replicas: s.cfg.Replicas, EventsMaxBytes: s.cfg.EventsMaxBytes, DLQMaxBytes: s.cfg.DLQMaxBytes}); err != nil {
			return fmt.Errorf("exporter: %w", err)
		}
	}
	regs, err := newRegistries(s.cfg.Registry)
	if err != nil {
		return err
	}
	index, err := cacheindex.Open(ctx, js)
	if err != nil {
		return err
	}
	sessions, err := session.NewClient(s.js.Conn())
	if err != nil {
		return err
	}
	h := &Handler{
		sessions:   sessions,
		index:      index,
		registries: regs.get,
		builds: BuildsFunc(func(ctx context.Context, buildID string) ([]events.Event, error) {
			return bus.Replay(ctx, s.js, buildID)
		}),
		window: s.cfg.Window,
	}
	return service.Run(ctx, js, spec, func(w *bus.Worker) {
		w.Handle(events.TypeCacheExportRequested, bus.Typed(h.Export))
		w.Handle(events.TypeCacheImportRequested, bus.Typed(h.Import))
	})
}

// registries keeps one client per set of insecure hosts: the configured
// one, and one more for each host a target marked registry.insecure.
type registries struct {
	cfg     registry.Config
	mu      sync.Mutex
	clients map[string]*registry.Client
}

func newRegistries(cfg registry.Config) (*registries, error) {
	c, err := registry.New(cfg)
	if err != nil {
		return nil, err
	}
	return &registries{cfg: cfg, clients: map[string]*registry.Client{"": c}}, nil
}

func (r *registries) get(insecureHost string) (Registry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.clients[insecureHost]; ok {
		return c, nil
	}
	cfg := r.cfg
	cfg.Insecure = append(slices.Clone(cfg.Insecure), insecureHost)
	c, err := registry.New(cfg)
	if err != nil {
		return nil, err
	}
	r.clients[insecureHost] = c
	return c, nil
}

var _ Registry = (*registry.Client)(nil)
