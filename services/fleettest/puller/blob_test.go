package puller_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// snapshotFile reads the file name of the content snapshot key on the
// node of svc, through a read-only view of the snapshot.
func snapshotFile(t *testing.T, svc *snapshotter.Service, key, name string) (os.FileInfo, []byte) {
	t.Helper()
	sn := svc.Store().Snapshotter()
	view := fmt.Sprintf("test-view-%d", time.Now().UnixNano())
	mounts, err := sn.View(t.Context(), view, key)
	if err != nil {
		t.Fatalf("view of %s: %v", key, err)
	}
	defer func() { _ = sn.Remove(t.Context(), view) }()
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("view of %s: mounts %+v, want one bind mount", key, mounts)
	}
	entries, err := os.ReadDir(mounts[0].Source)
	if err != nil || len(entries) != 1 || entries[0].Name() != name {
		t.Fatalf("snapshot %s holds %v (%v), want only %s", key, entries, err, name)
	}
	path := filepath.Join(mounts[0].Source, name)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi, data
}

// owner returns a uid and gid the snapshotter can give a file here: any as
// root, the process's own otherwise.
func owner() (uid, gid int) {
	if os.Geteuid() == 0 {
		return 1000, 100
	}
	return os.Getuid(), os.Getgid()
}

// A docker-image+blob source: its key is BuildKit's JSON, computed without
// the network; a pull makes a one-file snapshot named, moded and owned as
// asked, with mtime 0 and the blob's bytes; a second pull is a cache hit
// that fetches nothing.
func TestBlobPull(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	data := []byte("#!/bin/sh\necho a tool stored as a blob\n")
	dgst := s.Registry.PushBlob(t, "blobs/tools", data)
	ref := s.Registry.Host() + "/blobs/tools@" + dgst.String()
	uid, gid := owner()
	attrs := map[string]string{
		source.AttrHTTPFilename: "tool.sh",
		source.AttrHTTPPerm:     "0755",
		source.AttrHTTPUID:      fmt.Sprint(uid),
		source.AttrHTTPGID:      fmt.Sprint(gid),
	}
	wantKey := digest.FromString(fmt.Sprintf(`{"Version":"v1","Digest":%q,"Filename":"tool.sh","Perm":493,"UID":%d,"GID":%d}`, dgst, uid, gid)).String()
	s.Registry.Reset()

	// The key alone: no registry request.
	m := fleettest.Miss(t, s.Resolve(t, "docker-image+blob://"+ref, attrs, ""))
	if len(m.Keys) != 1 {
		t.Fatalf("keys %v", keysOf(m))
	}
	k := m.Keys[0]
	if k.Index != 0 || !k.Done || k.Key != wantKey || k.Pin != dgst.String() || k.Digest != source.SolverDigest(wantKey) {
		t.Errorf("key %+v, want index 0, done, %s pinned to %s", k, wantKey, dgst)
	}
	if n := len(s.Registry.Requests()); n != 0 {
		t.Errorf("the key took %d registry requests", n)
	}

	// The pull.
	rec, _ := s.Request(t, "docker-image+blob://"+ref, attrs, "", true)
	ready := fleettest.Ready(t, rec)
	reqs := rec.OfType(events.TypeSnapshotRequested)
	if len(reqs) != 1 {
		t.Fatalf("%d snapshot.requested", len(reqs))
	}
	want := events.FileContent{Name: "tool.sh", Perm: 0o755, UID: int64(uid), GID: int64(gid), Digest: dgst, Size: -1,
		Locations: []events.BlobLocation{{Ref: ref}}}
	if got := reqs[0].Data.(events.SnapshotRequested).Content; got == nil || got.File == nil || fmt.Sprint(*got.File) != fmt.Sprint(want) {
		t.Errorf("content %+v, want file %+v", got, want)
	}
	fi, got := snapshotFile(t, svc, ready.SnapshotKey, "tool.sh")
	if string(got) != string(data) {
		t.Errorf("file holds %q", got)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != 0o755 || int(st.Uid) != uid || int(st.Gid) != gid || fi.ModTime().Unix() != 0 {
		t.Errorf("file mode %v, owner %d:%d, mtime %v; want 0755, %d:%d, the epoch", fi.Mode(), st.Uid, st.Gid, fi.ModTime(), uid, gid)
	}
	blobGets := s.Registry.Count("GET", registrytest.KindBlob)
	if blobGets != 1 {
		t.Errorf("%d blob GETs for the snapshot", blobGets)
	}

	// Again: a hit on that node, nothing fetched.
	again, _ := s.Request(t, "docker-image+blob://"+ref, attrs, "", true)
	hit := fleettest.PullEnd(t, again)
	h, ok := hit.Data.(events.CacheHit)
	if !ok || h.Key.Key != wantKey || h.Record.Node != ready.Node || h.Record.SnapshotKey != ready.SnapshotKey || h.Snapshot {
		t.Fatalf("second pull ended with %v %+v", bustest.Summary([]events.Event{hit}), hit.Data)
	}
	if got := s.Registry.Count("GET", registrytest.KindBlob); got != blobGets {
		t.Errorf("the hit fetched %d blobs", got-blobGets)
	}
}

// Without a file name the file is named by the digest's hex, with mode
// 0600; the key hashes the attributes as given (empty name, perm 0).
func TestBlobDefaults(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	data := []byte("plain blob\n")
	dgst := s.Registry.PushBlob(t, "blobs/plain", data)
	ref := s.Registry.Host() + "/blobs/plain@" + dgst.String()
	rec, _ := s.Request(t, "docker-image+blob://"+ref, nil, "", true)
	ready := fleettest.Ready(t, rec)
	if want := digest.FromString(fmt.Sprintf(`{"Version":"v1","Digest":%q,"Filename":"","Perm":0,"UID":0,"GID":0}`, dgst)).String(); ready.Keys[0].Key != want {
		t.Errorf("key %s, want %s", ready.Keys[0].Key, want)
	}
	fi, got := snapshotFile(t, svc, ready.SnapshotKey, dgst.Encoded())
	if string(got) != string(data) || fi.Mode() != 0o600 || fi.ModTime().Unix() != 0 {
		t.Errorf("file %q, mode %v, mtime %v", got, fi.Mode(), fi.ModTime())
	}

	// A blob that is not there fails the snapshot, not the key.
	missing := s.Registry.Host() + "/blobs/plain@" + digest.FromString("nothing").String()
	end := fleettest.PullEnd(t, s.Pull(t, "docker-image+blob://"+missing, ""))
	if _, ok := end.Data.(events.SnapshotFailed); !ok {
		t.Errorf("missing blob ended with %v", bustest.Summary([]events.Event{end}))
	}
}

// A record of a file source that names no node or no snapshot (a lazy one,
// as an imported cache would write, or a broken one) cannot be read: it is
// a miss, and a pull snapshots the file and records it. A record with
// both is a hit that ends the build.
func TestBlobRecordWithoutNodeIsAMiss(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	node, _ := s.Snapshotter(t)
	dgst := s.Registry.PushBlob(t, "blobs/lazy", []byte("lazy\n"))
	identifier := "docker-image+blob://" + s.Registry.Host() + "/blobs/lazy@" + dgst.String()
	key := digest.FromString(fmt.Sprintf(`{"Version":"v1","Digest":%q,"Filename":"","Perm":0,"UID":0,"GID":0}`, dgst)).String()
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	put := func(rec events.CacheRecord) {
		t.Helper()
		rec.Digests, rec.CreatedAt = []digest.Digest{source.SolverDigest(key)}, time.Now().UTC()
		if err := idx.Put(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
	}

	put(events.CacheRecord{Node: "gone"}) // a node but no snapshot
	fleettest.Miss(t, s.Resolve(t, identifier, nil, ""))

	put(events.CacheRecord{ // lazy: layers and locations, no node
		Layers:    []events.Layer{{Blob: ocispec.Descriptor{Digest: dgst, Size: 5}, DiffID: dgst}},
		Locations: []events.BlobLocation{{Ref: s.Registry.Host() + "/blobs/lazy"}},
	})
	rec := s.Pull(t, identifier, "")
	ready := fleettest.Ready(t, rec)
	if len(rec.OfType(events.TypeCacheHit)) != 0 || len(rec.OfType(events.TypeCacheMiss)) != 1 {
		t.Errorf("lazy record: %v, want a miss and a snapshot", bustest.Summary(rec.Events()))
	}
	r, found, err := idx.Get(t.Context(), source.SolverDigest(key))
	if err != nil || !found || r.Node != node.Name || r.SnapshotKey != ready.SnapshotKey {
		t.Fatalf("record after the pull: %+v %v %v", r, found, err)
	}

	hit := fleettest.Final(t, s.Resolve(t, identifier, nil, ""))
	if h, ok := hit.Data.(events.CacheHit); !ok || h.Record.Node != node.Name || h.Snapshot {
		t.Errorf("with the snapshot recorded: %v", bustest.Summary([]events.Event{hit}))
	}
}
