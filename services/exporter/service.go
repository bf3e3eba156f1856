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
	"slices"
	"sync"

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

// Config configures the exporter. In a fleet (Def.Member) it takes the
// fleet's service.Settings where it leaves them zero: the Replica's and
// Registry.
type Config struct {
	// Replica is how the replica runs. An empty Instance means the host
	// name plus the process id; zero Concurrency means 2; a zero Consumer
	// means bus.ExporterConsumer().
	service.Replica
	// Registry configures registry access (credentials, insecure hosts).
	Registry registry.Config
	// Window bounds the blobs one export writes at once. Zero means
	// DefaultWindow.
	Window int
}

func (c *Config) setDefaults() {
	c.Default(service.Replica{Instance: service.HostPID(), Concurrency: 2, Consumer: bus.ExporterConsumer()})
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
}

// Validate reports a configuration the service cannot run with.
func (c Config) Validate() error {
	if c.Window < 0 {
		return errors.New("negative window")
	}
	return c.Replica.Validate()
}

// Def is the exporter as the service shell assembles it (its own part is
// setup): Def.New makes a replica on a connection, Def.Member the exporter
// in a fleet (service.StartFleet).
var Def = service.Def[Config, *Config]{Component: events.ComponentExporter, Defaults: (*Config).setDefaults, Setup: setup}

// setup opens what the handler needs (the topology is provisioned by
// then) and registers the handler.
func setup(ctx context.Context, setup *service.Setup, cfg Config) error {
	regs, err := newRegistries(cfg.Registry)
	if err != nil {
		return err
	}
	index, err := cacheindex.Open(ctx, setup.JetStream)
	if err != nil {
		return err
	}
	sessions, err := session.NewClient(setup.Running.Conn())
	if err != nil {
		return err
	}
	h := NewHandler(HandlerConfig{
		Sessions:   NewSessionClient(sessions),
		Index:      index,
		Registries: regs.get,
		Builds: BuildsFunc(func(ctx context.Context, buildID string) ([]events.Event, error) {
			return bus.Replay(ctx, setup.Running, buildID)
		}),
		Window: cfg.Window,
	})
	setup.Worker.Handle(events.TypeCacheExportRequested, bus.Typed(h.Export))
	setup.Worker.Handle(events.TypeCacheImportRequested, bus.Typed(h.Import))
	return nil
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

// New validates cfg and makes an exporter replica on js (Def.New); Run serves it.
func New(js jetstream.JetStream, cfg Config) (*service.Service[Config], error) {
	return Def.New(js, cfg)
}
