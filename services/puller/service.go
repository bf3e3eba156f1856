// Package puller is Stevedore's cache-key service. It consumes
// cachekey.requested. For an image, index 0 resolves the reference,
// fetches index, manifest and config (never layers) once across the fleet,
// and computes BuildKit's main-manifest key; index 1 computes the chainID
// of the diff_ids from the CacheOpts the request carries, without touching
// the network. A docker-image+blob source has one key, computed without the
// network; an http or https source has one key, for which the fleet
// revalidates the URL with the ETags it knows (events.BucketHTTP) and
// downloads it to hash it only when they are stale. An oci-layout source
// is an image read from the client's OCI layout over its session
// (pkg/session), with docker-image's keys; an oci-layout+blob source has
// the blob key, computed without the session. Each key is looked up
// in the cache index: a hit ends the source (cache.hit), a miss continues
// with the next index or, after the last, cache.miss (and a
// snapshot.requested when the client wants the content).
package puller

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
	"github.com/stevedore-dev/stevedore/pkg/tagwatch"
)

// Config configures the puller. In a fleet (Def.Member) it takes the
// fleet's service.Settings where it leaves them zero: the Replica's,
// Platform, Registry and Downloads.
type Config struct {
	// Replica is how the replica runs. An empty Instance means the host
	// name plus the process id; zero Concurrency means 16; a zero Consumer
	// means bus.PullerConsumer().
	service.Replica
	// Platform is used for sources that name none. Zero means the platform
	// this process runs on.
	Platform ocispec.Platform
	// Registry configures registry access (credentials, insecure hosts,
	// manifest size cap).
	Registry registry.Config
	// TagMaxAge is how long the fleet's resolution of a tag answers a
	// request without the registry being asked (image.resolvemode=default;
	// pull always asks, local takes any age). Zero means the registry is
	// asked for every request, as BuildKit does.
	TagMaxAge time.Duration
	// TagRevalidate is how long past TagMaxAge a resolution still answers
	// at once while one replica of the fleet revalidates it in the
	// background (stale-while-revalidate); the progress says so. Zero
	// means none: past the max age the request waits for the registry.
	// It needs TagMaxAge.
	TagRevalidate time.Duration
	// TagWatchInterval is how often the fleet re-resolves the watched
	// tags (stevedore watch-tags): once per interval for the whole fleet,
	// by the replica that claims it. Zero means this replica takes no part
	// in it.
	TagWatchInterval time.Duration
	// LeaseTTL is how long a fetch lease outlives a dead holder. Zero means
	// 30s.
	LeaseTTL time.Duration
	// Downloads, when set, is an OCI image layout directory where this
	// replica keeps what it downloads of http sources for the snapshotters
	// given the same directory (snapshotter.Config.Downloads; see
	// WithDownloads). Empty keeps nothing: the snapshotter downloads the
	// file again.
	Downloads string
}

func (c *Config) setDefaults() {
	c.Default(service.Replica{Instance: service.HostPID(), Concurrency: 16, Consumer: bus.PullerConsumer()})
	if c.Platform.OS == "" {
		c.Platform = platforms.DefaultSpec()
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
}

// Validate reports a configuration the service cannot run with.
func (c Config) Validate() error {
	if c.LeaseTTL < 0 {
		return errors.New("negative lease TTL")
	}
	if c.TagMaxAge < 0 || c.TagRevalidate < 0 || c.TagWatchInterval < 0 {
		return errors.New("negative tag max age or revalidate window")
	}
	if c.TagMaxAge == 0 && c.TagRevalidate > 0 {
		return errors.New("a tag revalidate window needs a tag max age")
	}
	return c.Replica.Validate()
}

// Def is the puller as the service shell assembles it (its own part is
// setup): Def.New makes a replica on a connection, Def.Member the puller
// in a fleet (service.StartFleet).
var Def = service.Def[Config, *Config]{Component: events.ComponentPuller, Defaults: (*Config).setDefaults, Setup: setup}

// setup opens what the handler needs (the topology is provisioned by
// then), starts the tag watcher and registers the handler.
func setup(ctx context.Context, setup *service.Setup, cfg Config) error {
	js := setup.JetStream // what the replica sets up waits out a busy or electing cluster
	reg, err := registry.New(cfg.Registry)
	if err != nil {
		return err
	}
	flight, err := setup.Flight(ctx, events.BucketManifests, cfg.LeaseTTL)
	if err != nil {
		return err
	}
	httpShared, err := setup.Flight(ctx, events.BucketHTTP, cfg.LeaseTTL)
	if err != nil {
		return err
	}
	index, err := cacheindex.Open(ctx, js)
	if err != nil {
		return err
	}
	sessions, err := session.NewClient(setup.Running.Conn())
	if err != nil {
		return err
	}
	opts := []Option{WithHTTP(httpShared), WithSessions(store.NewClient(sessions)), WithSecrets(secret.NewClient(sessions)),
		WithTagFreshness(cfg.TagMaxAge, cfg.TagRevalidate)}
	if cfg.Downloads != "" {
		opts = append(opts, WithDownloads(cfg.Downloads))
	}
	h, err := NewHandler(reg, flight, index, cfg.Platform, opts...)
	if err != nil {
		return err
	}
	if cfg.TagWatchInterval > 0 {
		store, err := tagwatch.Open(ctx, js)
		if err != nil {
			return err
		}
		w := &watcher{store: store, registry: reg, pub: bus.NewPublisher(setup.Running), interval: cfg.TagWatchInterval,
			instance: cfg.Instance, log: cfg.Logger}
		var wg sync.WaitGroup
		wctx, cancel := context.WithCancelCause(ctx)
		wg.Go(func() { w.run(wctx) })
		setup.Defer(func() {
			cancel(errors.New("puller stopped"))
			wg.Wait()
		})
	}
	setup.Worker.Handle(events.TypeCacheKeyRequested, bus.Typed(h.CacheKey))
	return nil
}

// New validates cfg and makes a puller replica on js (Def.New); Run serves it.
func New(js jetstream.JetStream, cfg Config) (*service.Service[Config], error) {
	return Def.New(js, cfg)
}
