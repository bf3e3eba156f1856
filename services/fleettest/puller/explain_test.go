package puller_test

import (
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
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

// A git source whose ref moved since the fleet made its record says so,
// with the old and new commits.
func TestMissExplainsAGitRefThatMoved(t *testing.T) {
	t.Parallel()
	root := gitremotetest.NewRoot(t)
	work := gitremotetest.NewWork(t)
	work.Write("a.txt", "one\n", 0o644)
	old := work.Commit("one")
	work.Push(root, "repo")
	web := gitremotetest.ServeHTTP(t, root)
	s := fleettest.New(t)
	s.Puller(t)
	identifier, attrs := gitSource(web.URL, "main", nil)

	rec, build := s.Request(t, identifier, attrs, "", true)
	pulled := fleettest.Miss(t, rec)
	if e := pulled.Explanation; e == nil || e.Nearest != nil || e.Source != lineage.GitIdentity(identifier) {
		t.Fatalf("first pull: explanation %+v, want one without a nearest record", e)
	}
	contentRecord(t, s, pulled.Keys[0])
	work.Write("a.txt", "two\n", 0o644)
	cur := work.Commit("two")
	work.Push(root, "repo")
	e := fleettest.Miss(t, s.Resolve(t, identifier, attrs, "")).Explanation
	if e == nil || e.Nearest == nil || e.Nearest.Build != build {
		t.Fatalf("after the move: explanation %+v, want the pull's record as the nearest", e)
	}
	if len(e.Differences) != 1 {
		t.Fatalf("differences %+v, want the ref alone", e.Differences)
	}
	if d := e.Differences[0]; d.Kind != events.DiffRefMoved || d.Name != lineage.GitRef(identifier, "main") || d.Old != old || d.New != cur ||
		d.OldSeen == nil || d.NewSeen == nil {
		t.Errorf("ref difference %+v, want main moved from %s to %s", d, old, cur)
	}
}

// An http source whose URL serves other content says so, with both
// digests, and which validators changed.
func TestMissExplainsHTTPContentThatChanged(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	srv := newFileServer(t, helloContent(t), true)
	rec, build := s.Request(t, srv.url(), nil, "", true)
	first := fleettest.Miss(t, rec)
	if e := first.Explanation; e == nil || e.Nearest != nil || e.Source != srv.url() {
		t.Fatalf("first pull: explanation %+v, want one without a nearest record", e)
	}
	contentRecord(t, s, first.Keys[0])
	changed := []byte("hello again from http\n")
	srv.mu.Lock()
	srv.content, srv.modTime = changed, srv.modTime.Add(time.Hour)
	srv.mu.Unlock()
	e := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, "")).Explanation
	if e == nil || e.Nearest == nil || e.Nearest.Build != build {
		t.Fatalf("after the change: explanation %+v, want the pull's record as the nearest", e)
	}
	kinds := map[string]events.Difference{}
	for _, d := range e.Differences {
		kinds[d.Kind] = d
	}
	if len(kinds) != 3 {
		t.Errorf("differences %+v, want content, ETag and Last-Modified", e.Differences)
	}
	if d := kinds[events.DiffContentChanged]; d.Name != srv.url() || d.Old != helloDigest || d.New != digest.FromBytes(changed).String() || d.OldSeen == nil {
		t.Errorf("content difference %+v", d)
	}
	if d := kinds[events.DiffETag]; d.Old == "" || d.New == "" || d.Old == d.New {
		t.Errorf("ETag difference %+v", d)
	}
	if d := kinds[events.DiffLastModified]; d.Old != "2026-01-01T00:00:00Z" || d.New != "2026-01-01T01:00:00Z" {
		t.Errorf("Last-Modified difference %+v", d)
	}
}

// contentRecord writes the record of a content source's key, as a
// snapshotter would once the pull's snapshot is made.
func contentRecord(t *testing.T, s *fleettest.Stack, key events.CacheKey) {
	t.Helper()
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.Put(t.Context(), events.CacheRecord{Digests: []digest.Digest{key.Digest}, Node: "node-a", SnapshotKey: "s", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}
