package puller_test

import (
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// A miss after the tag moved says so, with the old and new digests and
// when each was seen, and which layer differs first; once the record is
// pruned, the same miss says that too. A resolve without a snapshot
// leaves no sighting behind.
func TestMissExplainsATagThatMoved(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	ref := s.Push(t, "single", "explain/img:1")

	// Never made: no nearest record.
	m := fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	if e := m.Explanation; e == nil || e.Nearest != nil || e.Source != "docker-image://"+s.Registry.Host()+"/explain/img" {
		t.Fatalf("first resolve: explanation %+v, want one without a nearest record", e)
	}
	// A pull makes the record (written here, as a snapshotter would).
	rec, build := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	pulled := fleettest.Miss(t, rec)
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.Put(t.Context(), events.CacheRecord{Digests: []digest.Digest{pulled.Keys[0].Digest, pulled.Keys[1].Digest},
		ChainID: digest.Digest(pulled.Keys[1].Key), Node: "node-a", SnapshotKey: "s", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	s.Push(t, "multi", "explain/img:1")
	m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	e := m.Explanation
	if e == nil || e.Nearest == nil || e.Nearest.Build != build {
		t.Fatalf("after the move: explanation %+v, want the pull's record as the nearest", e)
	}
	if len(e.Differences) != 2 {
		t.Fatalf("differences %+v, want the tag and a layer", e.Differences)
	}
	moved, layer := e.Differences[0], e.Differences[1]
	if moved.Kind != events.DiffTagMoved || moved.Old != fx.Images["single"].Digest || moved.New != fx.Images["multi"].Digest ||
		moved.OldSeen == nil || moved.NewSeen == nil || !moved.NewSeen.After(*moved.OldSeen) {
		t.Errorf("tag difference %+v", moved)
	}
	if layer.Kind != events.DiffLayer || layer.Name != "0" {
		t.Errorf("layer difference %+v, want layer 0", layer)
	}

	// The record goes; the miss says it is pruned.
	for _, d := range pulled.Keys {
		if err := idx.Delete(t.Context(), cachefmt.RecordDigest(d.Digest, 0)); err != nil {
			t.Fatal(err)
		}
	}
	m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	if d := m.Explanation.Differences; len(d) != 3 || d[2].Kind != events.DiffPruned {
		t.Errorf("after the prune: differences %+v, want pruned last", d)
	}
}
