package puller_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/services/fleettest"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// The index-1 step needs nothing but its event: a fresh replica, with the
// fleet's shared manifest state wiped, computes it without one registry
// request.
func TestIndexOneNeedsNoRegistry(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	first := s.Puller(t)
	ref := s.Push(t, "multi", "idx/one:1")
	rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/arm64", false)
	fleettest.Miss(t, rec)
	reqs := rec.OfType(events.TypeCacheKeyRequested)
	var next events.Event
	for _, r := range reqs {
		if r.Data.(events.CacheKeyRequested).Index == 1 {
			next = r
		}
	}
	if next.ID == "" {
		t.Fatalf("no index-1 request among %v", bustest.Summary(reqs))
	}
	first.Stop()

	// Wipe every shared manifest resolution and start a new replica.
	kv, err := s.Env.JS.KeyValue(t.Context(), events.BucketManifests)
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
	s.Registry.Reset()
	s.Puller(t)

	// Replay the index-1 request as a new build.
	replay := events.Event{ID: "replay-1", BuildID: "replay", Source: "/test", Time: time.Now(), Data: next.Data}
	rrec := s.Env.Record(t, "replay")
	s.Env.Publish(t, replay)
	m := fleettest.Miss(t, rrec)
	if m.Keys[1].Key != fx.Images["multi"].Field(t, "linux/arm64", "key1") {
		t.Errorf("index-1 key %s", m.Keys[1].Key)
	}
	if n := len(s.Registry.Requests()); n != 0 {
		t.Errorf("index-1 step made %d registry requests: %+v", n, s.Registry.Requests())
	}
}

// 50 concurrent resolves of one tag with 2 replicas: one manifest GET and
// one config GET for the whole fleet.
func TestConcurrentResolvesFetchOnce(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t, registrytest.WithLatency(20*time.Millisecond))
	s.Puller(t)
	s.Puller(t)
	ref := s.Push(t, "single", "many/requests:latest")
	s.Registry.Reset()

	const n = 50
	recs := make([]*bustest.Recorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i], _ = s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
		}()
	}
	wg.Wait()
	key1 := fx.Images["single"].Field(t, "linux/amd64", "key1")
	for _, rec := range recs {
		if m := fleettest.Miss(t, rec); m.Keys[1].Key != key1 {
			t.Fatalf("key1 = %s", m.Keys[1].Key)
		}
	}
	if got := s.Registry.Count("GET", registrytest.KindManifest); got != 1 {
		t.Errorf("%d manifest GETs for %d concurrent resolves, want 1 (%v)", got, n, s.Registry.Counts())
	}
	if got := s.Registry.Count("GET", registrytest.KindBlob); got != 1 {
		t.Errorf("%d blob GETs (the config), want 1 (%v)", got, s.Registry.Counts())
	}
	t.Logf("registry requests for %d resolves: %v", n, s.Registry.Counts())
}

// A replica that dies mid-request (its connection drops while it waits on
// the registry) loses the request to another replica after AckWait; the
// other replica waits out the dead one's fetch lease, completes the build,
// and the events both may emit are stored once.
func TestReplicaDiesMidRequest(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	ref := s.Push(t, "single", "dies/mid:1")
	gate := s.Registry.Gate("HEAD", registrytest.KindManifest)
	defer gate.Release()
	doomed := s.Puller(t)
	rec, buildID := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
	select {
	case <-gate.Arrived():
	case <-time.After(10 * time.Second):
		t.Fatal("the first replica never asked the registry")
	}
	doomed.NC.Close()
	s.Puller(t)
	m := fleettest.Miss(t, rec)
	gate.Release()
	if len(m.Keys) != 2 {
		t.Fatalf("keys %v", keysOf(m))
	}
	// Once the puller's consumer is idle, every handler has published
	// what it will (before its ack); the stream says what it kept.
	s.ConsumerIdle(t, events.ConsumerPuller)
	stored := s.Env.Stored(t, buildID)
	if n := countOf(stored, events.TypeCacheMiss); n != 1 {
		t.Errorf("%d cache.miss events stored, want 1: %v", n, bustest.Summary(stored))
	}
	if n := countOf(stored, events.TypeCacheKeyRequested); n != 2 {
		t.Errorf("%d cachekey.requested events stored, want 2 (duplicates must be dropped): %v", n, bustest.Summary(stored))
	}
}

// A key found in the cache index ends the build with cache.hit: at index 0
// for the same image, at index 1 for a retagged, recompressed copy.
func TestCacheHits(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	single := fx.Images["single"]
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	rec := events.CacheRecord{
		Digests: []digest.Digest{digest.Digest(single.Field(t, "linux/amd64", "solver0")), digest.Digest(single.Field(t, "linux/amd64", "solver1"))},
		ChainID: digest.Digest(single.Field(t, "linux/amd64", "key1")), Node: "node-a", CreatedAt: time.Now().UTC(),
	}
	if err := idx.Put(t.Context(), rec); err != nil {
		t.Fatal(err)
	}

	ref := s.Push(t, "single", "hits/single:1")
	r, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
	hit := fleettest.Final(t, r)
	h, ok := hit.Data.(events.CacheHit)
	if !ok || h.Key.Index != 0 || h.Record.Node != "node-a" {
		t.Fatalf("same image: %v %+v", bustest.Summary([]events.Event{hit}), hit.Data)
	}
	if len(r.OfType(events.TypeCacheKeyComputed)) != 0 {
		t.Error("a hit at index 0 must not compute index 1")
	}

	ref = s.Push(t, "single-retag", "hits/retag:2")
	r, _ = s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
	hit = fleettest.Final(t, r)
	h, ok = hit.Data.(events.CacheHit)
	if !ok || h.Key.Index != 1 || h.Key.Key != single.Field(t, "linux/amd64", "key1") {
		t.Fatalf("retagged copy: %v", bustest.Summary([]events.Event{hit}))
	}
	if c := r.OfType(events.TypeCacheKeyComputed); len(c) != 1 || c[0].Data.(events.CacheKeyComputed).Key.Index != 0 {
		t.Errorf("retagged copy: computed %v, want index 0 only", bustest.Summary(c))
	}
}

// countOf counts the events of type typ.
func countOf(es []events.Event, typ events.Type) int {
	n := 0
	for _, e := range es {
		if e.Type() == typ {
			n++
		}
	}
	return n
}
