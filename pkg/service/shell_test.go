package service_test

import (
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

// toyConfig is a service's Config as the shell sees one.
type toyConfig struct {
	service.Replica
	Registry registry.Config
	Window   int
}

func (c toyConfig) Validate() error {
	if c.Window < 0 {
		return errors.New("toy: negative window")
	}
	return c.Consumer.Validate()
}

var toy = service.Def[toyConfig, *toyConfig]{
	Component: "toy",
	Defaults: func(c *toyConfig) {
		c.Default(service.Replica{Instance: "default", Concurrency: 3, Consumer: bus.PullerConsumer()})
		if c.Window == 0 {
			c.Window = 4
		}
	},
}

func toyWith(setup service.SetupFunc[toyConfig]) service.Def[toyConfig, *toyConfig] {
	d := toy
	d.Setup = setup
	return d
}

// A member takes the fleet's settings where its own config leaves a field
// zero, keeps its own where it sets one, then gets the service's defaults;
// its setup sees that config.
func TestMemberTakesTheFleetSettings(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dial, _ := dialer(t, env)
	backoff := func(int) time.Duration { return time.Millisecond }
	settings := service.Settings{
		Dial:     dial,
		Replica:  service.Replica{Instance: "shared", Concurrency: 7, Backoff: backoff, Logger: quiet, StopGrace: time.Second},
		Registry: registry.Config{DockerConfigDir: "/shared"},
		Platform: ocispec.Platform{OS: "linux", Architecture: "arm64"},
	}
	seen := make(chan toyConfig, 2)
	setup := func(_ context.Context, _ *service.Setup, cfg toyConfig) error {
		seen <- cfg
		return nil
	}
	own := toyWith(setup).Member(toyConfig{Replica: service.Replica{Instance: "mine"}, Registry: registry.Config{DockerConfigDir: "/mine"}})
	f, err := service.StartFleet(t.Context(), settings, own)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	got := f.Runner(own.Name).(*service.Service[toyConfig]).Config()
	if got.Instance != "mine" || got.Registry.DockerConfigDir != "/mine" {
		t.Errorf("own fields %q %q, want mine and /mine", got.Instance, got.Registry.DockerConfigDir)
	}
	if got.Concurrency != 7 || got.Backoff == nil || got.Logger != quiet || got.StopGrace != time.Second {
		t.Errorf("shared replica fields not taken: %+v", got.Replica)
	}
	if got.Window != 4 || got.Consumer.Name != bus.PullerConsumer().Name {
		t.Errorf("defaults not filled: window %d, consumer %q", got.Window, got.Consumer.Name)
	}
	select {
	case cfg := <-seen:
		if diff := cmp.Diff(got.Registry, cfg.Registry); diff != "" || cfg.Instance != "mine" {
			t.Errorf("setup saw another config: %s %q", diff, cfg.Instance)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("setup not called")
	}
	taker := toyWith(setup).Member(toyConfig{Replica: service.Replica{Instance: "taker"}})
	taken, err := service.StartFleet(t.Context(), settings, taker)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }()
	if c := taken.Runner(taker.Name).(*service.Service[toyConfig]).Config(); c.Registry.DockerConfigDir != "/shared" {
		t.Errorf("a zero Registry took %q, want the fleet's /shared", c.Registry.DockerConfigDir)
	}

	zero, err := toyWith(setup).New(env.JS, toyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if c := zero.Config(); c.Instance != "default" || c.Concurrency != 3 || c.Registry.DockerConfigDir != "" {
		t.Errorf("New without settings: %+v", c)
	}
	if _, err := toyWith(setup).New(env.JS, toyConfig{Window: -1}); err == nil {
		t.Error("New took a config Validate refuses")
	}
}

// A member that fails Validate fails the fleet's start.
func TestMemberInvalidFailsStart(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dial, _ := dialer(t, env)
	m := toyWith(func(context.Context, *service.Setup, toyConfig) error { return nil }).Member(toyConfig{Window: -1})
	if _, err := service.StartFleet(t.Context(), service.Settings{Dial: dial}, m); err == nil {
		t.Fatal("StartFleet started a member with a config its service refuses")
	}
}

// oddConfig has a field named as a shared setting but of another type.
type oddConfig struct {
	service.Replica
	Platform string
}

// A config whose field is named as a shared setting but of another type
// fails its member's start rather than silently keeping its own.
func TestMemberSharedFieldOfAnotherType(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dial, _ := dialer(t, env)
	odd := service.Def[oddConfig, *oddConfig]{Component: "odd", Setup: func(context.Context, *service.Setup, oddConfig) error { return nil }}
	settings := service.Settings{Dial: dial, Replica: service.Replica{Instance: "i", Consumer: bus.PullerConsumer()}}
	if _, err := service.StartFleet(t.Context(), settings, odd.Member(oddConfig{})); err == nil || !strings.Contains(err.Error(), "Platform") {
		t.Fatalf("StartFleet = %v, want an error naming Platform", err)
	}
}

// The flags a binary asks for give the fleet's settings.
func TestFlagsGiveSettings(t *testing.T) {
	t.Setenv("STEVEDORE_INSECURE_REGISTRIES", "a:5000, b:5000")
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	c := service.RegisterCommon(fs)
	c.Instance("replica name")
	c.Platform("platform")
	c.Registry()
	c.Downloads("downloads")
	c.DataDir("data")
	if err := fs.Parse([]string{"-instance=i1", "-platform=linux/arm64/v8", "-docker-config=/dc", "-http-downloads=/dl", "-data-dir=/d", "-replicas=3"}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Settings(quiet)
	if err != nil {
		t.Fatal(err)
	}
	if s.Instance != "i1" || s.Replicas != 3 || s.Logger != quiet || s.Provision != c.Provision || s.StartTimeout != c.StartTimeout {
		t.Errorf("replica settings %+v", s.Replica)
	}
	want := service.Settings{DataDir: "/d", Platform: ocispec.Platform{OS: "linux", Architecture: "arm64"},
		Registry: registry.Config{DockerConfigDir: "/dc", Insecure: []string{"a:5000", "b:5000"}}, Downloads: "/dl"}
	s.Dial, s.Replica = nil, service.Replica{}
	if diff := cmp.Diff(want, s, cmp.Comparer(func(a, b service.Dial) bool { return a == nil && b == nil }), cmp.AllowUnexported(service.Observe{})); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
}
