package puller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/platforms"
	"github.com/nats-io/nats.go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixtures is testdata/images/expected.json: keys computed by gen.py,
// independently of this code, and BuildKit's own keys for buildkit-base.
type fixtures struct {
	Images map[string]fixtureImage `json:"images"`
}

type fixtureImage struct {
	Path      string                    `json:"path"`
	RefName   string                    `json:"ref_name"`
	Digest    string                    `json:"digest"`
	MediaType string                    `json:"media_type"`
	Reject    string                    `json:"reject"`
	Oracle    string                    `json:"oracle"`
	Platforms map[string]map[string]any `json:"platforms"`
}

const imagesDir = "../../testdata/images"

func loadFixtures(t testing.TB) fixtures {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(imagesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f fixtures
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// field returns a string field of a platform entry, failing if absent.
func (img fixtureImage) field(t testing.TB, platform, name string) string {
	t.Helper()
	p, ok := img.Platforms[platform]
	if !ok {
		t.Fatalf("fixture has no platform %s", platform)
	}
	v, ok := p[name].(string)
	if !ok {
		t.Fatalf("fixture %s has no %s", platform, name)
	}
	return v
}

// stack is an embedded NATS, a test registry, a resolver and any number of
// puller replicas, each on its own connection.
type stack struct {
	env      *bustest.Env
	reg      *registrytest.Registry
	regCfg   registry.Config
	replicas atomic.Int32
	builds   atomic.Int32
}

// pullerConsumer has test-sized timings: a dead replica's message comes
// back after a second.
func pullerConsumer() bus.Consumer {
	c := bus.PullerConsumer()
	c.AckWait = time.Second
	c.MaxDeliver = 6
	return c
}

func newStack(t *testing.T, opts ...registrytest.Option) *stack {
	t.Helper()
	s := &stack{
		env: bustest.Start(t, bus.Topology{Consumers: []bus.Consumer{bus.ResolverConsumer(), pullerConsumer()}}),
		reg: registrytest.New(t, opts...),
	}
	s.regCfg = registry.Config{DockerConfigDir: t.TempDir()}
	_, js := s.env.Connect(t, "resolver")
	r, err := resolver.New(js, resolver.Config{Instance: "r1", Logger: quiet, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	s.run(t, "resolver", r.Run)
	return s
}

// run runs a service until the end of the test.
func (s *stack) run(t *testing.T, name string, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel(errors.New("test over"))
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

type replica struct {
	nc   *nats.Conn
	stop func()
}

// puller starts a puller replica; mut adjusts its configuration.
func (s *stack) puller(t *testing.T, mut ...func(*puller.Config)) replica {
	t.Helper()
	n := s.replicas.Add(1)
	nc, js := s.env.Connect(t, fmt.Sprintf("puller-%d", n))
	cfg := puller.Config{
		Instance:    fmt.Sprintf("p%d", n),
		Registry:    s.regCfg,
		LeaseTTL:    2 * time.Second,
		Consumer:    pullerConsumer(),
		Concurrency: 8,
		Backoff:     bus.ExponentialBackoff(20*time.Millisecond, 200*time.Millisecond),
		Logger:      quiet,
	}
	for _, m := range mut {
		m(&cfg)
	}
	p, err := puller.New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return replica{nc: nc, stop: s.run(t, cfg.Instance, p.Run)}
}

// push pushes a fixture image to repo:tag and returns its reference.
func (s *stack) push(t *testing.T, name, repoTag string) string {
	t.Helper()
	s.reg.PushLayout(t, filepath.Join(imagesDir, name), repoTag)
	return s.reg.Host() + "/" + repoTag
}

// resolve starts a build for identifier and returns its recorder.
func (s *stack) resolve(t *testing.T, identifier string, attrs map[string]string, platform string) (*bustest.Recorder, string) {
	t.Helper()
	id := fmt.Sprintf("b%d", s.builds.Add(1))
	op := events.SourceOp{Identifier: identifier, Attrs: attrs}
	if platform != "" {
		p, err := platforms.Parse(platform)
		if err != nil {
			t.Fatal(err)
		}
		op.Platform = &p
	}
	rec := s.env.Record(t, id)
	s.env.Request(t, id, events.SourceResolveRequested{Source: op})
	return rec, id
}

// done is the set of events that end a build.
var done = []events.Type{events.TypeCacheHit, events.TypeCacheMiss, events.TypeSourceFailed}

// final waits for the event that ends the build.
func final(t *testing.T, rec *bustest.Recorder) events.Event {
	t.Helper()
	return rec.Wait(t, 20*time.Second, done...)
}

// miss waits for the build's end and requires a cache.miss.
func miss(t *testing.T, rec *bustest.Recorder) events.CacheMiss {
	t.Helper()
	e := final(t, rec)
	m, ok := e.Data.(events.CacheMiss)
	if !ok {
		t.Fatalf("build ended with %v, want cache.miss", bustest.Summary([]events.Event{e}))
	}
	return m
}

// failure waits for the build's end and requires a source.failed.
func failure(t *testing.T, rec *bustest.Recorder) events.SourceFailed {
	t.Helper()
	e := final(t, rec)
	f, ok := e.Data.(events.SourceFailed)
	if !ok {
		t.Fatalf("build ended with %v, want source.failed", bustest.Summary([]events.Event{e}))
	}
	return f
}
