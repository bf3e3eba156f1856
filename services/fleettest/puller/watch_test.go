package puller_test

import (
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/tagwatch"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/puller"
)

func watchEvery(d time.Duration) func(*puller.Config) {
	return func(c *puller.Config) { c.TagWatchInterval = d }
}

// waitChecked waits until every watch has been checked once.
func waitChecked(t *testing.T, store *tagwatch.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, err := store.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		done := len(ws) > 0
		for _, w := range ws {
			done = done && w.Digest != ""
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watches never checked: %+v", ws)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A watched tag that moves gives one source.changed for the fleet, with
// the old and new digests, and a pre-pull build when asked; after a
// replica is lost the other goes on watching.
func TestWatchedTagMoves(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	a := s.Puller(t, watchEvery(300*time.Millisecond))
	s.Puller(t, watchEvery(300*time.Millisecond))
	ref := s.Push(t, "single", "watched/app:1")
	store, err := tagwatch.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Add(t.Context(), tagwatch.Watch{Ref: ref, Platform: "linux/amd64", Prepull: true}); err != nil {
		t.Fatal(err)
	}
	if err := store.Add(t.Context(), tagwatch.Watch{Ref: ref + "@" + fx.Images["single"].Digest}); err == nil {
		t.Error("a digest reference was accepted as a watch")
	}
	waitChecked(t, store)
	changes := s.Env.Record(t, events.WatchBuildID)

	s.Push(t, "multi", "watched/app:1")
	e := changes.Wait(t, 10*time.Second, events.TypeSourceChanged)
	c := e.Data.(events.SourceChanged)
	if c.Ref != ref || c.Old != fx.Images["single"].Digest || c.New != fx.Images["multi"].Digest || c.Platform != "linux/amd64" {
		t.Errorf("source.changed %+v", c)
	}
	if !c.Prepull || c.PrepullBuild == "" {
		t.Fatalf("source.changed %+v: no pre-pull", c)
	}
	prepull := s.Env.Record(t, c.PrepullBuild)
	if r := prepull.Wait(t, 10*time.Second, events.TypeSnapshotRequested); r.Data.(events.SnapshotRequested).Keys[0].Pin != fx.Images["multi"].Digest {
		t.Errorf("the pre-pull asks for %+v", r.Data)
	}
	// Three more rounds check the tag after the move (a round stores its
	// check before it publishes, so the first two have published by the
	// third): it is said once, in the stream.
	checkedAfter(t, store, time.Now(), 3)
	if n := countOf(s.Env.Stored(t, events.WatchBuildID), events.TypeSourceChanged); n != 1 {
		t.Errorf("%d source.changed for one move, want 1", n)
	}

	// One replica goes; the other notices the next move.
	a.Stop()
	s.Push(t, "single", "watched/app:1")
	deadline := time.Now().Add(10 * time.Second)
	for len(changes.OfType(events.TypeSourceChanged)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no source.changed after a replica was lost")
		}
		time.Sleep(50 * time.Millisecond)
	}
	last := changes.OfType(events.TypeSourceChanged)[1].Data.(events.SourceChanged)
	if last.Old != fx.Images["multi"].Digest || last.New != fx.Images["single"].Digest {
		t.Errorf("second move %+v", last)
	}

	if err := store.Remove(t.Context(), ref, "linux/amd64"); err != nil {
		t.Fatal(err)
	}
	if ws, err := store.List(t.Context()); err != nil || len(ws) != 0 {
		t.Errorf("after remove: %+v, %v", ws, err)
	}
}

// checkedAfter waits until the watches have been checked in n rounds
// that began after since.
func checkedAfter(t *testing.T, store *tagwatch.Store, since time.Time, n int) {
	t.Helper()
	seen := map[time.Time]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < n {
		ws, err := store.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if w.CheckedAt.After(since) {
				seen[w.CheckedAt] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rounds checked the watches in 20s, want %d: %+v", len(seen), n, ws)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
