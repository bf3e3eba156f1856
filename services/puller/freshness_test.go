package puller_test

import (
	"strings"
	"testing"
	"time"

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

// notes are the progress lines of rec whose action is one of a
// Resolution's From values.
func notes(rec *bustest.Recorder) []events.Progress {
	var out []events.Progress
	for _, e := range rec.OfType(events.TypeProgress) {
		p := e.Data.(events.Progress)
		switch p.Action {
		case events.ResolvedStale, events.ResolvedOutage, events.ResolvedFresh, events.ResolvedLocal:
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
	if first.CacheOpts.Resolution != nil {
		t.Errorf("first resolve: resolution %+v, want nil (the registry was asked)", first.CacheOpts.Resolution)
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
	if r := m.CacheOpts.Resolution; r == nil || r.From != events.ResolvedFresh || r.ResolvedAt.IsZero() {
		t.Errorf("resolution %+v, want fresh with its time", r)
	}
	if n := notes(rec); len(n) != 0 {
		t.Errorf("a fresh answer needs no progress line: %+v", n)
	}
	// image.resolvemode=pull still asks.
	m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageResolveMode: "pull"}, "linux/amd64"))
	if m.Keys[0].Pin != fx.Images["single-retag"].Digest || m.CacheOpts.Resolution != nil {
		t.Errorf("mode pull: pin %s, resolution %+v; want the moved tag's, asked", m.Keys[0].Pin, m.CacheOpts.Resolution)
	}
}

// Past the max age and inside the revalidate window the last digest
// answers at once, says so, and the fleet revalidates in the background:
// the next request sees the moved tag, fresh, without asking.
func TestTagStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t, freshness(300*time.Millisecond, time.Hour))
	s.Puller(t, freshness(300*time.Millisecond, time.Hour))
	ref := s.Push(t, "single", "stale/img:latest")
	fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	s.Push(t, "single-retag", "stale/img:latest")
	time.Sleep(400 * time.Millisecond)
	s.Registry.Reset()

	rec := s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	m := fleettest.Miss(t, rec)
	if m.Keys[0].Pin != fx.Images["single"].Digest {
		t.Errorf("stale: pin %s, want the last known %s", m.Keys[0].Pin, fx.Images["single"].Digest)
	}
	if r := m.CacheOpts.Resolution; r == nil || r.From != events.ResolvedStale {
		t.Errorf("stale: resolution %+v", r)
	}
	if n := notes(rec); len(n) != 1 || !strings.Contains(n[0].ID, "revalidates") {
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
	if r := m.CacheOpts.Resolution; r == nil || r.From != events.ResolvedFresh {
		t.Errorf("after revalidation: resolution %+v, want fresh", r)
	}
}

// A burst of stale answers across two replicas revalidates once.
func TestTagStaleRevalidatesOnceForTheFleet(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t, registrytest.WithLatency(100*time.Millisecond))
	s.Puller(t, freshness(200*time.Millisecond, time.Hour))
	s.Puller(t, freshness(200*time.Millisecond, time.Hour))
	ref := s.Push(t, "single", "once/img:latest")
	fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	time.Sleep(300 * time.Millisecond)
	s.Registry.Reset()
	recs := make([]*bustest.Recorder, 10)
	for i := range recs {
		recs[i], _ = s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
	}
	for _, rec := range recs {
		fleettest.Miss(t, rec)
	}
	time.Sleep(500 * time.Millisecond) // let the revalidation finish
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
	r := m.CacheOpts.Resolution
	if r == nil || r.From != events.ResolvedOutage || r.Error == "" || r.ResolvedAt.IsZero() {
		t.Fatalf("outage: resolution %+v, want outage with the error and the time", r)
	}
	n := notes(rec)
	if len(n) != 1 || !strings.Contains(n[0].ID, "registry unavailable") || !strings.Contains(n[0].ID, fx.Images["single"].Digest) {
		t.Errorf("outage: progress lines %+v", n)
	}
}
