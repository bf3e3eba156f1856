package snapshotter_test

import (
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// What containerd and buildkitd's worker really put over a proxy
// snapshotter: containerd's metadata layer, which renames keys and parents
// (<ns>/<id>/<key>), finds a remote snapshot by walking the backend for the
// target label on its parent, and, collecting garbage, removes every
// backend snapshot its database does not know. Remote snapshots work
// through it, and its garbage collection cannot reach the fleet's
// snapshots.
func TestRemoteSnapshotsThroughContainerdMetadata(t *testing.T) {
	t.Parallel()
	f := newBuilderFleet(t, true)
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	mdb := metadata.NewDB(db, cs, map[string]snapshots.Snapshotter{"stargz": f.sn})
	ctx := namespaces.WithNamespace(t.Context(), "buildkit")
	if err := mdb.Init(ctx); err != nil {
		t.Fatal(err)
	}
	sn := mdb.Snapshotter("stargz")
	parent := ""
	for i := range f.layers {
		target := f.chainIDs[i].String()
		_, err := sn.Prepare(ctx, "tmp-remote "+target, parent, snapshots.WithLabels(buildkitLabels(f.ref, f.layers, i, target)))
		if !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare of layer %d through containerd's metadata = %v, want AlreadyExists", i, err)
		}
		info, err := sn.Stat(ctx, target)
		if err != nil || info.Kind != snapshots.KindCommitted || info.Parent != parent {
			t.Fatalf("metadata Stat(%s) = %+v, %v; want committed on %q", target, info, err, parent)
		}
		parent = target
	}
	mounts, err := sn.View(ctx, "view", parent)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, mounts, "etc/os-release"); got != singleFiles["etc/os-release"] {
		t.Errorf("etc/os-release = %q", got)
	}
	if err := sn.Remove(ctx, "view"); err != nil {
		t.Fatal(err)
	}
	// No lease, no gc root: the collection removes all of the daemon's
	// snapshots, in the backend too, and none of the fleet's.
	if _, err := mdb.GarbageCollect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sn.Stat(t.Context(), f.chainIDs[0].String()); !errdefs.IsNotFound(err) {
		t.Errorf("the builder's snapshot after its gc: %v, want removed", err)
	}
	for i, c := range f.chainIDs {
		if !f.svc.Store().Has(t.Context(), c) {
			t.Errorf("the fleet's snapshot of layer %d went with the daemon's gc", i)
		}
	}
}
