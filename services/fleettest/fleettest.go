// Package fleettest runs a whole Stevedore fleet inside one test: an
// embedded NATS JetStream server, an in-process registry holding the
// fixture images of testdata/images, a resolver, and as many puller and
// snapshotter replicas as the test starts, each on its own connection, with
// test-sized timings. It also reads testdata/images/expected.json, the keys
// computed independently of the code under test.
package fleettest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/services/exporter"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// Quiet is a logger that discards everything.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// ImagesDir is testdata/images of the repository.
var ImagesDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "images")
}()

// Fixtures is testdata/images/expected.json.
type Fixtures struct {
	Images map[string]Image `json:"images"`
}

// Image is one fixture image.
type Image struct {
	Path      string                    `json:"path"`
	RefName   string                    `json:"ref_name"`
	Digest    string                    `json:"digest"`
	MediaType string                    `json:"media_type"`
	Reject    string                    `json:"reject"`
	Oracle    string                    `json:"oracle"`
	Platforms map[string]map[string]any `json:"platforms"`
}

// LoadFixtures reads expected.json.
func LoadFixtures(t testing.TB) Fixtures {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ImagesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f Fixtures
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// Field returns a string field of a platform entry, failing if absent.
func (img Image) Field(t testing.TB, platform, name string) string {
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

// Strings returns a string-list field of a platform entry.
func (img Image) Strings(t testing.TB, platform, name string) []string {
	t.Helper()
	raw, ok := img.Platforms[platform][name].([]any)
	if !ok {
		t.Fatalf("fixture %s has no list %s", platform, name)
	}
	out := make([]string, len(raw))
	for i, v := range raw {
		out[i], _ = v.(string)
	}
	return out
}

// PullerConsumer has test-sized timings: a dead replica's message comes
// back after a second.
func PullerConsumer() bus.Consumer {
	c := bus.PullerConsumer()
	c.AckWait = time.Second
	c.MaxDeliver = 6
	return c
}

// SnapshotterConsumer has test-sized timings: a dead replica's message
// comes back after two seconds.
func SnapshotterConsumer() bus.Consumer {
	c := bus.SnapshotterConsumer()
	c.AckWait = 2 * time.Second
	c.MaxDeliver = 6
	return c
}

// ExporterConsumer has test-sized timings.
func ExporterConsumer() bus.Consumer {
	c := bus.ExporterConsumer()
	c.AckWait = 2 * time.Second
	c.MaxDeliver = 6
	return c
}

// Stack is a fleet for one test.
type Stack struct {
	// Env is the embedded NATS server and the test's connection.
	Env *bustest.Env
	// Registry holds the images the test pushes.
	Registry *registrytest.Registry
	// RegistryConfig is what every replica reaches it with.
	RegistryConfig registry.Config
	// Settings are what every replica shares (each is a fleet of one):
	// quiet, with test-sized retries, reaching Registry.
	Settings service.Settings

	replicas atomic.Int32
	builds   atomic.Int32
}

// New starts the server, the registry (with opts) and a resolver.
func New(t testing.TB, opts ...registrytest.Option) *Stack {
	t.Helper()
	s := &Stack{
		Env: bustest.Start(t, bus.Topology{Consumers: []bus.Consumer{
			bus.ResolverConsumer(), PullerConsumer(), SnapshotterConsumer(), ExporterConsumer(),
		}}),
		Registry: registrytest.New(t, opts...),
	}
	s.RegistryConfig = registry.Config{DockerConfigDir: t.TempDir()}
	s.Settings = service.Settings{Registry: s.RegistryConfig,
		Replica: service.Replica{Logger: Quiet, Backoff: bus.ExponentialBackoff(20*time.Millisecond, 200*time.Millisecond)}}
	s.start(t, "resolver", resolver.Def.Member(resolver.Config{Replica: service.Replica{Instance: "r1"}, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}))
	return s
}

// start starts m (service.StartFleet, a fleet of one, with s.Settings) on
// a connection of its own named conn; the replica stops, and closes, at the end of the
// test. It fails the test if m does not start or stops with an error.
func (s *Stack) start(t testing.TB, conn string, m service.Member) (Replica, service.Runner) {
	t.Helper()
	var nc *nats.Conn
	settings := s.Settings
	settings.Dial = func(string) (*nats.Conn, jetstream.JetStream, error) {
		var js jetstream.JetStream
		nc, js = s.Env.Connect(t, conn)
		return nc, js, nil
	}
	// A data dir a test has just closed can stay locked for a moment: a
	// child process forked meanwhile (a test's git, a CGI) holds a copy
	// of the lock's descriptor until it execs. Wait for it (10s at most).
	var f *service.Fleet
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		f, err = service.StartFleet(t.Context(), settings, m)
		if !errors.Is(err, snapshot.ErrLocked) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := f.Stop(); err != nil {
				t.Errorf("%s: %v", conn, err)
			}
		})
	}
	t.Cleanup(func() { stop(); _ = f.Close() })
	return Replica{NC: nc, Stop: stop}, f.Runner(m.Name)
}

// Replica is a running service replica.
type Replica struct {
	// NC is its connection; closing it is a network failure.
	NC *nats.Conn
	// Stop stops it and waits.
	Stop func()
	// Name is its instance name.
	Name string
}

// Puller starts a puller replica; mut adjusts its configuration.
func (s *Stack) Puller(t testing.TB, mut ...func(*puller.Config)) Replica {
	t.Helper()
	n := s.replicas.Add(1)
	cfg := puller.Config{Replica: service.Replica{Instance: fmt.Sprintf("p%d", n), Consumer: PullerConsumer(), Concurrency: 8}, LeaseTTL: 2 * time.Second}
	for _, m := range mut {
		m(&cfg)
	}
	r, _ := s.start(t, fmt.Sprintf("puller-%d", n), puller.Def.Member(cfg))
	r.Name = cfg.Instance
	return r
}

// Snapshotter starts a snapshotter replica with its own data dir under
// t.TempDir(); mut adjusts its configuration.
func (s *Stack) Snapshotter(t testing.TB, mut ...func(*snapshotter.Config)) (Replica, *snapshotter.Service) {
	t.Helper()
	n := s.replicas.Add(1)
	cfg := snapshotter.Config{DataDir: t.TempDir(), Node: fmt.Sprintf("node%d", n), LeaseTTL: 2 * time.Second,
		Replica: service.Replica{Consumer: SnapshotterConsumer()}}
	for _, m := range mut {
		m(&cfg)
	}
	r, svc := s.start(t, fmt.Sprintf("snapshotter-%d", n), snapshotter.Member(cfg))
	r.Name = cfg.Node
	return r, svc.(*snapshotter.Service)
}

// Exporter starts an exporter replica; mut adjusts its configuration.
func (s *Stack) Exporter(t *testing.T, mut ...func(*exporter.Config)) Replica {
	t.Helper()
	n := s.replicas.Add(1)
	cfg := exporter.Config{Replica: service.Replica{Instance: fmt.Sprintf("e%d", n), Consumer: ExporterConsumer()}}
	for _, m := range mut {
		m(&cfg)
	}
	r, _ := s.start(t, fmt.Sprintf("exporter-%d", n), exporter.Def.Member(cfg))
	r.Name = cfg.Instance
	return r
}

// Forget empties the cache index and the fleet's memory of snapshots,
// manifests and http downloads: the state a fresh fleet (or another
// machine) starts from.
func (s *Stack) Forget(t *testing.T) {
	t.Helper()
	for _, bucket := range []string{events.BucketCacheIndex, events.BucketSnapshots, events.BucketManifests, events.BucketHTTP, events.BucketLeases} {
		kv, err := s.Env.JS.KeyValue(t.Context(), bucket)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.ListKeys(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys.Keys() {
			if err := kv.Purge(t.Context(), k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Push pushes a fixture image to repo:tag and returns its reference.
func (s *Stack) Push(t testing.TB, name, repoTag string) string {
	t.Helper()
	s.Registry.PushLayout(t, filepath.Join(ImagesDir, name), repoTag)
	return s.Registry.Host() + "/" + repoTag
}

// Request starts a build for identifier (a resolve, or with snapshot set a
// pull) and returns its recorder and build id.
func (s *Stack) Request(t *testing.T, identifier string, attrs map[string]string, platform string, snapshot bool) (*bustest.Recorder, string) {
	t.Helper()
	op := events.SourceOp{Identifier: identifier, Attrs: attrs}
	if platform != "" {
		p, err := service.Platform(platform)
		if err != nil {
			t.Fatal(err)
		}
		op.Platform = &p
	}
	return s.Submit(t, events.SourceResolveRequested{Source: op, Snapshot: snapshot})
}

// Submit starts a build with req (a session, say), signed for the
// sessions it names, and returns its recorder and build id.
func (s *Stack) Submit(t *testing.T, req events.SourceResolveRequested) (*bustest.Recorder, string) {
	t.Helper()
	id := fmt.Sprintf("b%d", s.builds.Add(1))
	rec := s.Env.Record(t, id)
	e := events.New(req)
	e.ID, e.BuildID, e.Source, e.Time = id+"-request", id, "/stevedore/test", time.Now()
	// Signed, as the client library signs, with the keys of the sessions
	// this process holds (ServeSession, HoldKey); a session it holds no
	// key of goes unsigned, and the resolver refuses the request.
	_ = session.SignRequest(&e)
	s.Env.Publish(t, e)
	return rec, id
}

// Resolve starts a build that stops at the keys.
func (s *Stack) Resolve(t *testing.T, identifier string, attrs map[string]string, platform string) *bustest.Recorder {
	t.Helper()
	rec, _ := s.Request(t, identifier, attrs, platform, false)
	return rec
}

// Pull starts a build that wants the snapshot.
func (s *Stack) Pull(t *testing.T, identifier string, platform string) *bustest.Recorder {
	t.Helper()
	rec, _ := s.Request(t, identifier, nil, platform, true)
	return rec
}

// Final waits (20s) for one of the events that end a resolve.
func Final(t *testing.T, rec *bustest.Recorder) events.Event {
	t.Helper()
	return rec.Wait(t, 20*time.Second, events.TypeCacheHit, events.TypeCacheMiss, events.TypeSourceFailed)
}

// Miss waits for a resolve's end and requires a cache.miss.
func Miss(t *testing.T, rec *bustest.Recorder) events.CacheMiss {
	t.Helper()
	return want[events.CacheMiss](t, Final(t, rec))
}

// Failure waits for a resolve's end and requires a source.failed.
func Failure(t *testing.T, rec *bustest.Recorder) events.SourceFailed {
	t.Helper()
	return want[events.SourceFailed](t, Final(t, rec))
}

// PullEnd waits for one of the events that end a pull, for as long as
// the build makes progress (a new event at least every 30s: a big
// transfer on a loaded machine is slow, not stuck), 5 minutes at most. A
// hit of an imported cache that a snapshot follows does not end it.
func PullEnd(t *testing.T, rec *bustest.Recorder) events.Event {
	t.Helper()
	const idle, limit = 30 * time.Second, 5 * time.Minute
	e := rec.WaitActive(t, idle, limit, events.TypeCacheHit, events.TypeSnapshotReady, events.TypeSnapshotFailed, events.TypeSourceFailed)
	if hit, ok := e.Data.(events.CacheHit); ok && hit.Snapshot {
		return rec.WaitActive(t, idle, limit, events.TypeSnapshotReady, events.TypeSnapshotFailed, events.TypeSourceFailed)
	}
	return e
}

// Ready waits for a pull's end and requires a snapshot.ready.
func Ready(t *testing.T, rec *bustest.Recorder) events.SnapshotReady {
	t.Helper()
	return want[events.SnapshotReady](t, PullEnd(t, rec))
}

func want[T events.Payload](t *testing.T, e events.Event) T {
	t.Helper()
	p, ok := e.Data.(T)
	if !ok {
		var zero T
		t.Fatalf("build ended with %v, want %s", bustest.Summary([]events.Event{e}), zero.EventType())
	}
	return p
}

// ConsumerIdle fails unless the consumer has nothing pending or in flight:
// no stuck message.
func (s *Stack) ConsumerIdle(t *testing.T, name string) {
	t.Helper()
	c, err := s.Env.JS.Consumer(t.Context(), events.StreamEvents, name)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, errors.New("consumer info timed out"))
		info, err = c.Info(ctx)
		cancel()
		if err == nil && info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s not idle: %+v %v", name, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitFor polls cond for up to 10s.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
