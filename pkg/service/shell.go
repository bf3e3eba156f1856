package service

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/registry"
)

// Settings are what the members of a fleet share: how each is connected,
// how their replicas run, and the settings more than one service reads.
// A member's own config wins where it sets a field; Settings fill the
// fields it leaves zero. The shared settings (every field after
// Replica) are taken by name: a member's Config field with the name and
// type of one of them takes it, and a service declares which it reads by
// having such a field; a field of that name and another type fails the
// member's start.
type Settings struct {
	// Dial opens each member's connection. Required by StartFleet.
	Dial Dial
	// Replica is how every member's replica runs: instance, logger,
	// observation, provisioning, concurrency, retries and timeouts. The
	// Consumer is each service's own and is not shared. A bool (Provision)
	// set here cannot be unset by a member.
	Replica
	// DataDir is where a member that keeps files keeps them (the
	// snapshotter's content store and snapshots). Empty: the member's own.
	DataDir string
	// Platform is the platform of the sources and requests that name none
	// (resolver, puller). Zero: this host's.
	Platform ocispec.Platform
	// Registry is how members reach registries (puller, snapshotter,
	// exporter): credentials, insecure hosts, manifest size cap.
	Registry registry.Config
	// Downloads is the directory where the pullers keep what they download
	// of http sources and the snapshotters read it (puller.Config.Downloads,
	// snapshotter.Config.Downloads). Empty: none.
	Downloads string
}

// or is own unless it is its type's zero value, shared otherwise: how a
// member's config takes the fleet's Settings.
func or[T any](own, shared T) T {
	if reflect.ValueOf(&own).Elem().IsZero() {
		return shared
	}
	return own
}

// inherit fills r's zero fields from the fleet's s, all but the Consumer.
func (r *Replica) inherit(s Replica) {
	r.Instance = or(r.Instance, s.Instance)
	r.Concurrency = or(r.Concurrency, s.Concurrency)
	r.Backoff = or(r.Backoff, s.Backoff)
	r.Provision = r.Provision || s.Provision
	r.Replicas = or(r.Replicas, s.Replicas)
	r.EventsMaxBytes = or(r.EventsMaxBytes, s.EventsMaxBytes)
	r.DLQMaxBytes = or(r.DLQMaxBytes, s.DLQMaxBytes)
	r.Logger = or(r.Logger, s.Logger)
	r.Observe = or(r.Observe, s.Observe)
	r.StopGrace = or(r.StopGrace, s.StopGrace)
	r.StartTimeout = or(r.StartTimeout, s.StartTimeout)
}

func (r *Replica) replica() *Replica { return r }

// sharedFields are the names of Settings' shared fields: all but Dial and the
// Replica.
var sharedFields = func() []string {
	var names []string
	for f := range reflect.TypeFor[Settings]().Fields() {
		if f.Name != "Dial" && !f.Anonymous {
			names = append(names, f.Name)
		}
	}
	return names
}()

// take fills the fields of cfg (a pointer to a service's Config) that
// have the name of one of s's shared settings, where cfg leaves them zero.
func take(cfg any, s Settings) error {
	c, from := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(s)
	for _, name := range sharedFields {
		f, v := c.FieldByName(name), from.FieldByName(name)
		switch {
		case !f.IsValid():
		case f.Type() != v.Type():
			return fmt.Errorf("config field %s is a %s, the fleet's %s a %s", name, f.Type(), name, v.Type())
		case f.IsZero():
			f.Set(v)
		}
	}
	return nil
}

// Validate reports a replica that cannot run: a negative concurrency, or
// a consumer definition that is not one (bus.Consumer.Validate). A
// service's Config with checks of its own calls it from its Validate.
func (r Replica) Validate() error {
	if r.Concurrency < 0 {
		return errors.New("negative concurrency")
	}
	return r.Consumer.Validate()
}

// Config is a pointer to a service's Config: a struct that embeds Replica
// and says which configurations the service cannot run with (Validate:
// the Replica's, or the service's own that calls it).
type Config[C any] interface {
	*C
	Validate() error
	replica() *Replica
}

// Def is what the shell knows of a service: its name, its Config's
// defaults, and its setup (its Config takes the fleet's Settings by
// itself: the Replica and the shared fields it has). With it,
// Def.New makes a replica and Def.Member (or NewMember) the service's
// member of a fleet: the service says only what is its own, what a
// replica opens and the handlers it registers (Setup).
type Def[C any, P Config[C]] struct {
	// Component is the service's name ("puller"). Required.
	Component string
	// Defaults fills the fields of a config the service gives defaults
	// (its setDefaults). Nil: none.
	Defaults func(cfg P)
	// Setup is the service's part of a replica's Run. Required by New.
	Setup SetupFunc[C]
}

// SetupFunc is a service's part of Run: with the topology provisioned,
// it opens what a replica with config cfg needs and registers its
// handlers on s.Worker (Run's setup).
type SetupFunc[C any] func(ctx context.Context, s *Setup, cfg C) error

// Service is one replica of a service: its config with the defaults in,
// its connection, and its Run. Each service's New returns one (the
// snapshotter's wraps it).
type Service[C any] struct {
	cfg   C
	js    jetstream.JetStream
	spec  Spec
	setup SetupFunc[C]
}

// New fills cfg's defaults, checks it, and returns a replica on js whose
// Run calls d.Setup.
func (d Def[C, P]) New(js jetstream.JetStream, cfg C) (*Service[C], error) {
	if d.Defaults != nil {
		d.Defaults(&cfg)
	}
	if err := P(&cfg).Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", d.Component, err)
	}
	return &Service[C]{cfg: cfg, js: js, spec: Spec{Component: d.Component, Replica: *P(&cfg).replica()}, setup: d.Setup}, nil
}

// Member is the service in a fleet with cfg, which takes the fleet's
// Settings where it leaves fields zero; the member is a replica New
// makes.
func (d Def[C, P]) Member(cfg C) Member {
	return NewMember(d, cfg, func(_ context.Context, js jetstream.JetStream, cfg C) (*Service[C], error) { return d.New(js, cfg) })
}

// NewMember is the member of a fleet that open starts with cfg, once cfg
// has taken the fleet's Settings: for a service whose replica is more
// than a Service (what Def.Member returns otherwise).
func NewMember[C any, P Config[C], R Runner](d Def[C, P], cfg C, open func(ctx context.Context, js jetstream.JetStream, cfg C) (R, error)) Member {
	return Member{Name: MemberName(d.Component), Start: func(ctx context.Context, js jetstream.JetStream, s Settings) (Runner, error) {
		P(&cfg).replica().inherit(s.Replica)
		if err := take(&cfg, s); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Component, err)
		}
		r, err := open(ctx, js, cfg)
		if err != nil {
			return nil, err
		}
		return r, nil
	}}
}

// Config is the replica's config, with its defaults.
func (s *Service[C]) Config() C { return s.cfg }

// JetStream is the replica's connection.
func (s *Service[C]) JetStream() jetstream.JetStream { return s.js }

// Run serves until ctx is done (the package's Run, with the service's
// setup).
func (s *Service[C]) Run(ctx context.Context) error {
	return Run(ctx, s.js, s.spec, func(ctx context.Context, setup *Setup) error { return s.setup(ctx, setup, s.cfg) })
}
