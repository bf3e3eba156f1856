// Benchmarks: bench measures Stevedore against its floor in one run: the warm
// resolve path (digest-pinned reference, manifest already known to the
// fleet, key in the cache index) through the bus, next to the same three
// hops with handlers that do nothing. `make bench` runs it and prints the
// ratios.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// fleet is a bus with a resolver and some puller replicas, real or no-op.
type fleet struct {
	env *bustest.Env
	reg *registrytest.Registry
	// floor marks a fleet of no-op handlers, which never ask the registry.
	floor bool
	nc    *nats.Conn          // the client's connection
	js    jetstream.JetStream // on nc
	ref   string              // the digest-pinned reference to resolve
}

// transport is how every component connects to the embedded server:
// in-process (as `stevedore up` runs its services) or over loopback TCP (as
// the fleet does).
type transport string

const (
	inproc transport = "inproc"
	tcp    transport = "tcp"
)

func (f *fleet) connect(b *testing.B, tr transport, name string) (*nats.Conn, jetstream.JetStream) {
	b.Helper()
	if tr == tcp {
		return f.env.Connect(b, name)
	}
	nc, err := f.env.Server.Connect(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return nc, js
}

// startFleet starts the services. With floor set, the resolver and pullers
// are bus workers whose handlers only emit the next event: the same hops,
// acks and publishes, none of Stevedore's work.
func startFleet(b *testing.B, tr transport, floor bool, replicas int) *fleet {
	b.Helper()
	env := bustest.Start(b, bus.Topology{})
	reg := registrytest.New(b)
	desc := reg.PushLayout(b, filepath.Join("..", "testdata", "images", "single"), "bench/single:1")
	f := &fleet{env: env, reg: reg, floor: floor, ref: "docker-image://" + reg.Host() + "/bench/single@" + desc.Digest.String()}
	f.nc, f.js = f.connect(b, tr, "client")

	ctx, cancel := context.WithCancelCause(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(errors.New("bench over")); wg.Wait() })
	run := func(fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				b.Error(err)
			}
		}()
	}
	_, rjs := f.connect(b, tr, "resolver")
	if floor {
		run(noopWorker(b, rjs, bus.ResolverConsumer(), events.TypeSourceResolveRequested, func(in events.Event) events.Payload {
			return events.CacheKeyRequested{Source: in.Data.(events.SourceResolveRequested).Source}
		}))
	} else {
		r, err := resolver.New(rjs, resolver.Config{Replica: service.Replica{Instance: "bench", Logger: quiet}, Platform: amd64})
		if err != nil {
			b.Fatal(err)
		}
		run(r.Run)
	}
	for i := range replicas {
		_, pjs := f.connect(b, tr, fmt.Sprintf("puller-%d", i))
		if floor {
			run(noopWorker(b, pjs, bus.PullerConsumer(), events.TypeCacheKeyRequested, func(in events.Event) events.Payload {
				return events.CacheHit{Source: in.Data.(events.CacheKeyRequested).Source}
			}))
			continue
		}
		p, err := puller.New(pjs, puller.Config{Replica: service.Replica{Instance: fmt.Sprintf("bench-%d", i), Logger: quiet}, Platform: amd64,
			Registry: registry.Config{DockerConfigDir: b.TempDir()}})
		if err != nil {
			b.Fatal(err)
		}
		run(p.Run)
	}
	if !floor {
		f.warm(b)
	}
	return f
}

// noopWorker is a bus worker whose handler answers every input with one
// event and nothing else.
func noopWorker(b *testing.B, js jetstream.JetStream, c bus.Consumer, t events.Type, next func(events.Event) events.Payload) func(context.Context) error {
	w, err := bus.NewWorker(js, bus.WorkerConfig{Consumer: c, Source: "/bench/noop", Concurrency: 16, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	w.Handle(t, func(_ context.Context, in events.Event) ([]events.Event, error) {
		return []events.Event{events.New(next(in))}, nil
	})
	return w.Run
}

// warm resolves the reference once (so the fleet knows its manifest) and
// records a result under its index-0 key, so every later resolve is a hit.
func (f *fleet) warm(b *testing.B) {
	b.Helper()
	out, err := client.Resolve(b.Context(), f.js, "warmup", events.SourceOp{Identifier: f.ref, Platform: &amd64}, nil)
	if err != nil || out.Miss == nil {
		b.Fatalf("warm-up resolve: %+v %v", out, err)
	}
	idx, err := cacheindex.Open(b.Context(), f.js)
	if err != nil {
		b.Fatal(err)
	}
	rec := events.CacheRecord{Digests: []digest.Digest{out.Keys[0].Digest, out.Keys[1].Digest}, ChainID: digest.Digest(out.Keys[1].Key), CreatedAt: time.Now()}
	if err := idx.Put(b.Context(), rec); err != nil {
		b.Fatal(err)
	}
	// From here on the path is warm: it must not ask the registry
	// anything (requireNoRegistry).
	f.reg.Reset()
}

// requireNoRegistry fails the benchmark unless the registry saw no
// request since the warm-up: a warm resolve is answered from what the
// fleet knows.
func (f *fleet) requireNoRegistry(b *testing.B) {
	b.Helper()
	if f.floor {
		return // its registry only had the image pushed
	}
	if reqs := f.reg.Requests(); len(reqs) != 0 {
		b.Fatalf("the warm path made %d registry requests (%v), want none", len(reqs), f.reg.Counts())
	}
}

// hits delivers every cache.hit to the waiting request, through one core
// NATS subscription: the client side of the measurement costs nothing the
// fleet does not already pay.
type hits struct {
	mu      sync.Mutex
	waiting map[string]chan struct{}
}

func (f *fleet) subscribe(b *testing.B) *hits {
	h := &hits{waiting: map[string]chan struct{}{}}
	sub, err := f.nc.Subscribe(events.TypeFilter(events.TypeCacheHit), func(m *nats.Msg) {
		id, _, err := events.SplitSubject(m.Subject)
		if err != nil {
			return
		}
		h.mu.Lock()
		ch := h.waiting[id]
		delete(h.waiting, id)
		h.mu.Unlock()
		if ch != nil {
			close(ch)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

var builds atomic.Int64

// one resolves once and returns how long the hit took to arrive. It
// returns errors rather than failing b, since the throughput benchmark
// calls it from its own goroutines.
func (f *fleet) one(ctx context.Context, h *hits, pub *bus.Publisher) (time.Duration, error) {
	id := fmt.Sprintf("bench-%d", builds.Add(1))
	ch := make(chan struct{})
	h.mu.Lock()
	h.waiting[id] = ch
	h.mu.Unlock()
	e := events.New(events.SourceResolveRequested{Source: events.SourceOp{Identifier: f.ref, Platform: &amd64}})
	e.ID, e.BuildID, e.Source = id, id, "/bench/client"
	start := time.Now()
	e.Time = start
	if err := pub.Publish(ctx, e); err != nil {
		return 0, fmt.Errorf("build %s: %w", id, err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("build %s: no cache.hit in 10s", id)
	}
	return time.Since(start), nil
}

// settle resolves 50 times, unmeasured, to settle connections and caches.
func (f *fleet) settle(b *testing.B, h *hits, pub *bus.Publisher) {
	b.Helper()
	for range 50 {
		if _, err := f.one(b.Context(), h, pub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWarmPath is the latency of one resolve → index 0 → cache.hit at
// a time: p50 and p99 over b.N sequential requests.
func BenchmarkWarmPath(b *testing.B) {
	for _, tr := range []transport{inproc, tcp} {
		for _, floor := range []bool{true, false} {
			b.Run(string(tr)+"/"+variant(floor, 1), func(b *testing.B) {
				warmPath(b, startFleet(b, tr, floor, 1))
			})
		}
	}
}

func warmPath(b *testing.B, f *fleet) {
	{
		{
			h := f.subscribe(b)
			pub := bus.NewPublisher(f.js)
			f.settle(b, h, pub)
			lat := make([]time.Duration, 0, b.N)
			steal := startSteal()
			b.ResetTimer()
			for range b.N {
				d, err := f.one(b.Context(), h, pub)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, d)
			}
			b.StopTimer()
			f.requireNoRegistry(b)
			slices.Sort(lat)
			report(b, map[string]float64{
				"p50-µs":  float64(pct(lat, 50).Microseconds()),
				"p99-µs":  float64(pct(lat, 99).Microseconds()),
				"steal-%": steal(),
			})
		}
	}
}

// BenchmarkThroughput is resolves per second with 64 requests in flight,
// with 1 and 2 puller replicas connected over TCP, as a fleet's are (all in
// this process, sharing this machine's cores).
func BenchmarkThroughput(b *testing.B) {
	for _, floor := range []bool{true, false} {
		for _, replicas := range []int{1, 2} {
			b.Run(variant(floor, replicas), func(b *testing.B) {
				f := startFleet(b, tcp, floor, replicas)
				h := f.subscribe(b)
				pub := bus.NewPublisher(f.js)
				f.settle(b, h, pub)
				const inFlight = 64
				// The workers report their errors here; the benchmark's
				// goroutine fails b. The first error stops the feed.
				ctx, stop := context.WithCancelCause(b.Context())
				defer stop(errors.New("throughput measured"))
				work := make(chan struct{})
				var wg sync.WaitGroup
				var errMu sync.Mutex
				var errs []error
				for range inFlight {
					wg.Go(func() {
						for range work {
							if _, err := f.one(ctx, h, pub); err != nil {
								errMu.Lock()
								errs = append(errs, err)
								errMu.Unlock()
								stop(err)
							}
						}
					})
				}
				steal := startSteal()
				b.ResetTimer()
				start := time.Now()
			feed:
				for range b.N {
					select {
					case work <- struct{}{}:
					case <-ctx.Done():
						break feed
					}
				}
				close(work)
				wg.Wait()
				b.StopTimer()
				if len(errs) > 0 {
					b.Fatalf("%d of %d resolves failed: %v", len(errs), b.N, errors.Join(errs...))
				}
				f.requireNoRegistry(b)
				report(b, map[string]float64{
					"req/s":   float64(b.N) / time.Since(start).Seconds(),
					"steal-%": steal(),
				})
			})
		}
	}
}

func variant(floor bool, replicas int) string {
	name := "stevedore"
	if floor {
		name = "floor"
	}
	return fmt.Sprintf("%s/pullers=%d", name, replicas)
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}
