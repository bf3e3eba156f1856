package puller_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	fx := loadFixtures(t)
	s := newStack(t)
	first := s.puller(t)
	ref := s.push(t, "multi", "idx/one:1")
	rec, _ := s.resolve(t, "docker-image://"+ref, nil, "linux/arm64")
	miss(t, rec)
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
	first.stop()

	// Wipe every shared manifest resolution and start a new replica.
	kv, err := s.env.JS.KeyValue(t.Context(), events.BucketManifests)
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
	s.reg.Reset()
	s.puller(t)

	// Replay the index-1 request as a new build.
	replay := events.Event{ID: "replay-1", BuildID: "replay", Source: "/test", Time: time.Now(), Data: next.Data}
	rrec := s.env.Record(t, "replay")
	s.env.Publish(t, replay)
	m := miss(t, rrec)
	if m.Keys[1].Key != fx.Images["multi"].field(t, "linux/arm64", "key1") {
		t.Errorf("index-1 key %s", m.Keys[1].Key)
	}
	if n := len(s.reg.Requests()); n != 0 {
		t.Errorf("index-1 step made %d registry requests: %+v", n, s.reg.Requests())
	}
}

// 50 concurrent resolves of one tag with 2 replicas: one manifest GET and
// one config GET for the whole fleet.
func TestConcurrentResolvesFetchOnce(t *testing.T) {
	t.Parallel()
	fx := loadFixtures(t)
	s := newStack(t, registrytest.WithLatency(20*time.Millisecond))
	s.puller(t)
	s.puller(t)
	ref := s.push(t, "single", "many/requests:latest")
	s.reg.Reset()

	const n = 50
	recs := make([]*bustest.Recorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i], _ = s.resolve(t, "docker-image://"+ref, nil, "linux/amd64")
		}()
	}
	wg.Wait()
	key1 := fx.Images["single"].field(t, "linux/amd64", "key1")
	for _, rec := range recs {
		if m := miss(t, rec); m.Keys[1].Key != key1 {
			t.Fatalf("key1 = %s", m.Keys[1].Key)
		}
	}
	if got := s.reg.Count("GET", registrytest.KindManifest); got != 1 {
		t.Errorf("%d manifest GETs for %d concurrent resolves, want 1 (%v)", got, n, s.reg.Counts())
	}
	if got := s.reg.Count("GET", registrytest.KindBlob); got != 1 {
		t.Errorf("%d blob GETs (the config), want 1 (%v)", got, s.reg.Counts())
	}
	t.Logf("registry requests for %d resolves: %v", n, s.reg.Counts())
}

// A replica that dies mid-request (its connection drops while it waits on
// the registry) loses the request to another replica after AckWait; the
// other replica waits out the dead one's fetch lease, completes the build,
// and the events both may emit are stored once.
func TestReplicaDiesMidRequest(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ref := s.push(t, "single", "dies/mid:1")
	gate := s.reg.Gate("HEAD", registrytest.KindManifest)
	defer gate.Release()
	doomed := s.puller(t)
	rec, _ := s.resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	select {
	case <-gate.Arrived():
	case <-time.After(10 * time.Second):
		t.Fatal("the first replica never asked the registry")
	}
	doomed.nc.Close()
	s.puller(t)
	m := miss(t, rec)
	gate.Release()
	if len(m.Keys) != 2 {
		t.Fatalf("keys %v", keysOf(m))
	}
	time.Sleep(300 * time.Millisecond) // let any straggler publish
	if n := len(rec.OfType(events.TypeCacheMiss)); n != 1 {
		t.Errorf("%d cache.miss events, want 1", n)
	}
	if n := len(rec.OfType(events.TypeCacheKeyRequested)); n != 2 {
		t.Errorf("%d cachekey.requested events, want 2 (duplicates must be dropped)", n)
	}
	consumerIdle(t, s)
}

// A key found in the cache index ends the build with cache.hit: at index 0
// for the same image, at index 1 for a retagged, recompressed copy.
func TestCacheHits(t *testing.T) {
	t.Parallel()
	fx := loadFixtures(t)
	s := newStack(t)
	s.puller(t)
	single := fx.Images["single"]
	idx, err := cacheindex.Open(t.Context(), s.env.JS)
	if err != nil {
		t.Fatal(err)
	}
	rec := events.CacheRecord{
		Digests: []digest.Digest{digest.Digest(single.field(t, "linux/amd64", "solver0")), digest.Digest(single.field(t, "linux/amd64", "solver1"))},
		ChainID: digest.Digest(single.field(t, "linux/amd64", "key1")), Node: "node-a", CreatedAt: time.Now().UTC(),
	}
	if err := idx.Put(t.Context(), rec); err != nil {
		t.Fatal(err)
	}

	ref := s.push(t, "single", "hits/single:1")
	r, _ := s.resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	hit := final(t, r)
	h, ok := hit.Data.(events.CacheHit)
	if !ok || h.Key.Index != 0 || h.Record.Node != "node-a" {
		t.Fatalf("same image: %v %+v", bustest.Summary([]events.Event{hit}), hit.Data)
	}
	if len(r.OfType(events.TypeCacheKeyComputed)) != 0 {
		t.Error("a hit at index 0 must not compute index 1")
	}

	ref = s.push(t, "single-retag", "hits/retag:2")
	r, _ = s.resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	hit = final(t, r)
	h, ok = hit.Data.(events.CacheHit)
	if !ok || h.Key.Index != 1 || h.Key.Key != single.field(t, "linux/amd64", "key1") {
		t.Fatalf("retagged copy: %v", bustest.Summary([]events.Event{hit}))
	}
	if c := r.OfType(events.TypeCacheKeyComputed); len(c) != 1 || c[0].Data.(events.CacheKeyComputed).Key.Index != 0 {
		t.Errorf("retagged copy: computed %v, want index 0 only", bustest.Summary(c))
	}
}

// consumerIdle fails unless the puller's consumer has nothing pending or in
// flight: no stuck message.
func consumerIdle(t *testing.T, s *stack) {
	t.Helper()
	c, err := s.env.JS.Consumer(t.Context(), events.StreamEvents, events.ConsumerPuller)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, fmt.Errorf("consumer info"))
		info, err = c.Info(ctx)
		cancel()
		if err == nil && info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("puller consumer not idle: %+v %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
