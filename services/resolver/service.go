// Package resolver is Stevedore's source manager service. It consumes
// source.resolve.requested, parses the identifier of any BuildKit scheme,
// and emits source.resolved plus cachekey.requested for index 0 (for the
// service that handles the scheme), or source.failed with BuildKit's message.
package resolver

import (
	"context"
	"os"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

// Config configures the resolver. In a fleet (Def.Member) it takes the
// fleet's service.Settings where it leaves them zero: the Replica's and
// Platform.
type Config struct {
	// Replica is how the replica runs. An empty Instance means the host
	// name; zero Concurrency means 16; a zero Consumer means
	// bus.ResolverConsumer(). Its Validate is the Config's: the resolver
	// has no checks of its own.
	service.Replica
	// Platform is filled into requests that name none. Zero means the
	// platform this process runs on.
	Platform ocispec.Platform
}

func (c *Config) setDefaults() {
	host, _ := os.Hostname()
	c.Default(service.Replica{Instance: host, Concurrency: 16, Consumer: bus.ResolverConsumer()})
	if c.Platform.OS == "" {
		c.Platform = platforms.DefaultSpec()
	}
}

// Def is the resolver as the service shell assembles it (its own part is
// setup): Def.New makes a replica on a connection, Def.Member the resolver
// in a fleet (service.StartFleet).
var Def = service.Def[Config, *Config]{Component: events.ComponentResolver, Defaults: (*Config).setDefaults, Setup: setup}

// setup registers the handler.
func setup(_ context.Context, s *service.Setup, cfg Config) error {
	s.Worker.Handle(events.TypeSourceResolveRequested, bus.Typed(NewHandler(cfg.Platform).Resolve))
	return nil
}

// New validates cfg and makes a resolver replica on js (Def.New); Run serves it.
func New(js jetstream.JetStream, cfg Config) (*service.Service[Config], error) {
	return Def.New(js, cfg)
}
