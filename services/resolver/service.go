// Package resolver is Stevedore's source manager service. It consumes
// source.resolve.requested, parses the identifier of any BuildKit scheme,
// and emits source.resolved plus cachekey.requested for index 0 (for the
// service that handles the scheme), or source.failed with BuildKit's message.
package resolver

import (
	"context"
	"errors"
	"os"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

// Config configures the resolver.
type Config struct {
	// Replica is how the replica runs. An empty Instance means the host
	// name; zero Concurrency means 16; a zero Consumer means
	// bus.ResolverConsumer().
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

// Member is the service in a fleet (service.StartFleet) with cfg, observed
// where the fleet is.
func Member(cfg Config) service.Member {
	return service.NewMember(events.ComponentResolver, &cfg.Replica, func(_ context.Context, js jetstream.JetStream) (*Service, error) {
		return New(js, cfg)
	})
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	h := NewHandler(s.cfg.Platform)
	return service.Run(ctx, s.js, service.Spec{Component: events.ComponentResolver, Replica: s.cfg.Replica}, func(_ context.Context, setup *service.Setup) error {
		setup.Worker.Handle(events.TypeSourceResolveRequested, bus.Typed(h.Resolve))
		return nil
	})
}
