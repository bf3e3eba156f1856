package snapshotter_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// serveLayout serves the fixture layout of image name as store "app" of a
// new session, on a connection of its own (the client's).
func serveLayout(t *testing.T, s *fleettest.Stack, name string) *session.Server {
	t.Helper()
	l, err := ocilayout.Open(filepath.Join(fleettest.ImagesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	nc, _ := s.Env.Connect(t, "client")
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := session.Serve(t.Context(), nc, key.ID, session.Config{Protocols: []session.Protocol{fleettest.Stores(t, map[string]*ocilayout.Layout{"app": l})}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

func appAttrs(srv *session.Server) map[string]string {
	return map[string]string{source.AttrOCILayoutSessionID: srv.ID(), source.AttrOCILayoutStoreID: "app"}
}

// An oci-layout pull: the snapshotter reads every layer from the client's
// session, the snapshot has the image's files and the docker-image keys,
// and the same image from a registry then hits without fetching a blob.
func TestOCILayoutPullReadsTheSession(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	fx := fleettest.LoadFixtures(t)
	single := fx.Images["single"]
	s := fleettest.New(t)
	s.Puller(t)
	node, svc := s.Snapshotter(t)
	srv := serveLayout(t, s, "single")

	rec, _ := s.Request(t, "oci-layout://stevedore.local/app@"+single.Digest, appAttrs(srv), "linux/amd64", true)
	ready := fleettest.Ready(t, rec)
	if ready.ChainID != single.Field(t, "linux/amd64", "key1") || ready.Node != node.Name || ready.Fetched != 3 {
		t.Errorf("ready = %+v", ready)
	}
	out := t.TempDir()
	if err := svc.Store().Materialize(t.Context(), ready.Layers, out, nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range singleFiles {
		if got, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v", name, got, err)
		}
	}

	ref := s.Push(t, "single", "oci/single:1")
	s.Registry.Reset()
	hit := fleettest.PullEnd(t, s.Pull(t, "docker-image://"+ref, "linux/amd64"))
	if h, ok := hit.Data.(events.CacheHit); !ok || h.Key.Index != 0 || h.Record.Node != node.Name {
		t.Errorf("registry pull of the same image ended with %v", bustest.Summary([]events.Event{hit}))
	}
}

// The session must stay connected until the snapshot is made: a client
// that leaves between the keys and the snapshot fails it with BuildKit's
// message, permanently (one attempt).
func TestOCILayoutSnapshotNeedsTheSession(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	single := fx.Images["single"]
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	srv := serveLayout(t, s, "single")

	miss := fleettest.Miss(t, s.Resolve(t, "oci-layout://stevedore.local/app@"+single.Digest, appAttrs(srv), "linux/amd64"))
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	rec := s.Env.Record(t, "late")
	s.Env.Request(t, "late", events.SnapshotRequested{Source: miss.Source, Keys: miss.Keys, CacheOpts: miss.CacheOpts})
	end := rec.Wait(t, 20*time.Second, events.TypeSnapshotReady, events.TypeSnapshotFailed)
	f, ok := end.Data.(events.SnapshotFailed)
	if !ok {
		t.Fatalf("snapshot without the session ended with %v", bustest.Summary([]events.Event{end}))
	}
	if !strings.Contains(f.Reason, "no active session for "+srv.ID()) || f.Code != "not-found" || f.Attempts != 1 {
		t.Errorf("failure = %q [%s, %d attempts], want 'no active session for %s' [not-found, 1]", f.Reason, f.Code, f.Attempts, srv.ID())
	}
}

// An oci-layout+blob pull: one file, read from the session, with the
// attributes' name and mode and mtime the Unix epoch.
func TestOCILayoutBlobPull(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	single := fx.Images["single"]
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	srv := serveLayout(t, s, "single")

	config := single.Field(t, "linux/amd64", "config")
	attrs := appAttrs(srv)
	attrs[source.AttrHTTPFilename] = "config.json"
	attrs[source.AttrHTTPPerm] = "0640"
	rec, _ := s.Request(t, "oci-layout+blob://stevedore.local/app@"+config, attrs, "", true)
	ready := fleettest.Ready(t, rec)
	want, err := os.ReadFile(filepath.Join(fleettest.ImagesDir, "single", "blobs", "sha256", strings.TrimPrefix(config, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	fi, got := viewFile(t, svc, ready.SnapshotKey, "config.json")
	if string(got) != string(want) {
		t.Fatalf("config.json = %d bytes; want the blob's %d", len(got), len(want))
	}
	if fi.Mode() != 0o640 || fi.ModTime().Unix() != 0 {
		t.Errorf("config.json: mode %v, mtime %v; want 0640, the epoch", fi.Mode(), fi.ModTime())
	}
}

// viewFile returns the only file of a content snapshot, name, through a
// read-only view of it.
func viewFile(t *testing.T, svc *snapshotter.Service, key, name string) (os.FileInfo, []byte) {
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
	p := filepath.Join(mounts[0].Source, name)
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi, data
}
