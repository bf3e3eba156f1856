package puller_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/puller"
)

// freshness sets the puller's tag freshness.
func freshness(maxAge, revalidate time.Duration) func(*puller.Config) {
	return func(c *puller.Config) { c.TagMaxAge, c.TagRevalidate = maxAge, revalidate }
}

// notes are the progress lines of rec that say a tag's digest is not the
// registry's answer of now.
func notes(rec *bustest.Recorder) []events.Progress {
	var out []events.Progress
	for _, e := range rec.OfType(events.TypeProgress) {
		if p := e.Data.(events.Progress); p.Action == "stale" {
			out = append(out, p)
		}
	}
	return out
}

// Inside the max age the fleet's resolution answers without the registry,
// even when the tag has moved since; the event says where the digest came
// from.
func TestTagFreshInsideMaxAge(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t, freshness(time.Hour, 0))
	ref := s.Push(t, "single", "fresh/img:latest")
	first := fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	if first.Keys[0].Stale != "" {
		t.Errorf("first resolve: stale %q, want none (the registry was asked)", first.Keys[0].Stale)
	}
	s.Push(t, "single-retag", "fresh/img:latest")
	s.Registry.Reset()
	rec := s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	m := fleettest.Miss(t, rec)
	if m.Keys[0].Pin != fx.Images["single"].Digest {
		t.Errorf("inside the max age: pin %s, want the remembered %s", m.Keys[0].Pin, fx.Images["single"].Digest)
	}
	if n := s.Registry.Count("HEAD", registrytest.KindManifest) + s.Registry.Count("GET", registrytest.KindManifest); n != 0 {
		t.Errorf("inside the max age: %d manifest requests, want 0 (%v)", n, s.Registry.Counts())
	}
	if m.Keys[0].Stale != "" {
		t.Errorf("inside the max age: stale %q, want none", m.Keys[0].Stale)
	}
	if n := notes(rec); len(n) != 0 {
		t.Errorf("a fresh answer needs no progress line: %+v", n)
	}
	// image.resolvemode=pull still asks.
	m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageResolveMode: "pull"}, "linux/amd64"))
	if m.Keys[0].Pin != fx.Images["single-retag"].Digest {
		t.Errorf("mode pull: pin %s; want the moved tag's, asked", m.Keys[0].Pin)
	}
}

// Past the max age and inside the revalidate window the last digest
// answers at once, says so, and the fleet revalidates in the background:
// the next request sees the moved tag, fresh, without asking.
func TestTagStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t, freshness(time.Second, time.Hour))
	s.Puller(t, freshness(time.Second, time.Hour))
	ref := s.Push(t, "single", "stale/img:latest")
	fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	s.Push(t, "single-retag", "stale/img:latest")
	time.Sleep(1100 * time.Millisecond)
	s.Registry.Reset()

	rec := s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	m := fleettest.Miss(t, rec)
	if m.Keys[0].Pin != fx.Images["single"].Digest {
		t.Errorf("stale: pin %s, want the last known %s", m.Keys[0].Pin, fx.Images["single"].Digest)
	}
	if st := m.Keys[0].Stale; !strings.Contains(st, "past the tag max age (1s)") || !strings.Contains(st, "revalidates") {
		t.Errorf("stale: key.stale %q", st)
	}
	if n := notes(rec); len(n) != 1 || !strings.Contains(n[0].ID, "while the fleet revalidates it") {
		t.Errorf("stale: progress lines %+v, want one saying the fleet revalidates", n)
	}

	// The revalidation lands; the moved tag answers, fresh.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.Registry.Reset()
		m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
		if m.Keys[0].Pin == fx.Images["single-retag"].Digest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background revalidation never stored the moved tag (pin %s)", m.Keys[0].Pin)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Registry.Reset()
	m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	if m.Keys[0].Stale != "" || m.Keys[0].Pin != fx.Images["single-retag"].Digest {
		t.Errorf("after revalidation: pin %s, stale %q, want the moved tag, fresh", m.Keys[0].Pin, m.Keys[0].Stale)
	}
	if n := s.Registry.Count("HEAD", registrytest.KindManifest); n != 0 {
		t.Errorf("after revalidation: %d registry resolves, want 0 (fresh)", n)
	}
}

// A burst of stale answers across two replicas, all while the first
// revalidation is held at the registry, revalidates once: the tag's lease
// keeps the others from asking.
func TestTagStaleRevalidatesOnceForTheFleet(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	// The lease outlives the held revalidation however slow the machine
	// (the stack's 2s lease is for tests that kill replicas): the test is
	// of the lease keeping the others out, not of its expiry.
	longLease := func(c *puller.Config) { c.LeaseTTL = time.Minute }
	s.Puller(t, freshness(200*time.Millisecond, time.Hour), longLease)
	s.Puller(t, freshness(200*time.Millisecond, time.Hour), longLease)
	ref := s.Push(t, "single", "once/img:latest")
	fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	time.Sleep(300 * time.Millisecond)
	s.Registry.Reset()
	gate := s.Registry.Gate("HEAD", registrytest.KindManifest)
	defer gate.Release()
	recs := make([]*bustest.Recorder, 10)
	for i := range recs {
		recs[i], _ = s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
	}
	for _, rec := range recs {
		if m := fleettest.Miss(t, rec); m.Keys[0].Stale == "" {
			t.Errorf("an answer while the revalidation is held is not marked stale")
		}
	}
	select {
	case <-gate.Arrived():
	case <-time.After(10 * time.Second):
		t.Fatal("no replica revalidated")
	}
	gate.Release()
	// The revalidation is over when its lease is let go. A replica that
	// saw a stale answer may take the lease after that: it finds the
	// newer resolution and asks nothing.
	_, js := s.Env.Connect(t, "lease-reader")
	leases, err := js.KeyValue(t.Context(), events.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	fleettest.WaitFor(t, func() bool {
		_, err := leases.Keys(t.Context())
		return errors.Is(err, jetstream.ErrNoKeysFound)
	})
	if n := s.Registry.Count("HEAD", registrytest.KindManifest); n != 1 {
		t.Errorf("%d registry resolves for 10 stale answers on 2 replicas, want 1 (%v)", n, s.Registry.Counts())
	}
}

// Past the window the request waits for the registry; when the registry
// is down the last known digest answers, and the progress and the event
// say so.
func TestTagOutageSaysSo(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t, freshness(100*time.Millisecond, 100*time.Millisecond))
	ref := s.Push(t, "single", "outage/img:latest")
	fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	time.Sleep(300 * time.Millisecond)
	s.Registry.Fail(registrytest.FailRule{Status: 503, Times: -1})
	rec := s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	m := fleettest.Miss(t, rec)
	if m.Keys[0].Pin != fx.Images["single"].Digest {
		t.Errorf("outage: pin %s", m.Keys[0].Pin)
	}
	if st := m.Keys[0].Stale; !strings.Contains(st, "the registry did not answer") || !strings.Contains(st, "503") {
		t.Errorf("outage: key.stale %q", st)
	}
	n := notes(rec)
	if len(n) != 1 || !strings.Contains(n[0].ID, "the registry did not answer") {
		t.Errorf("outage: progress lines %+v", n)
	}
}

// A request's image.tagmaxage makes its answer fresher than the fleet's
// max age allows, never staler: 0 asks the registry inside the fleet's
// max age (and is not answered stale inside the revalidate window), and a
// longer one than the fleet's still asks when the fleet's has passed.
func TestTagMaxAgeOfTheRequest(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	fresher := fleettest.New(t)
	fresher.Puller(t, freshness(time.Hour, time.Hour))
	ref := fresher.Push(t, "single", "request/img:latest")
	fleettest.Miss(t, fresher.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	fresher.Push(t, "single-retag", "request/img:latest")
	fresher.Registry.Reset()
	m := fleettest.Miss(t, fresher.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageTagMaxAge: "0"}, "linux/amd64"))
	if m.Keys[0].Pin != fx.Images["single-retag"].Digest || m.Keys[0].Stale != "" {
		t.Errorf("tag max age 0 inside the fleet's hour: pin %s, stale %q; want the moved tag, asked", m.Keys[0].Pin, m.Keys[0].Stale)
	}
	if n := fresher.Registry.Count("HEAD", registrytest.KindManifest) + fresher.Registry.Count("GET", registrytest.KindManifest); n == 0 {
		t.Errorf("tag max age 0: the registry was not asked")
	}

	staler := fleettest.New(t)
	staler.Puller(t) // the fleet's max age is 0: ask every time
	ref = staler.Push(t, "single", "request/img:latest")
	fleettest.Miss(t, staler.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	staler.Push(t, "single-retag", "request/img:latest")
	m = fleettest.Miss(t, staler.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageTagMaxAge: "1h"}, "linux/amd64"))
	if m.Keys[0].Pin != fx.Images["single-retag"].Digest {
		t.Errorf("tag max age 1h on a fleet that asks every time: pin %s, want the moved tag (a request cannot make answers staler)", m.Keys[0].Pin)
	}

	f := fleettest.Failure(t, staler.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageTagMaxAge: "-1s"}, "linux/amd64"))
	if f.Code != "invalid" || !strings.Contains(f.Reason, "invalid tag max age -1s") {
		t.Errorf("a negative tag max age: %s %q, want invalid", f.Code, f.Reason)
	}
}
