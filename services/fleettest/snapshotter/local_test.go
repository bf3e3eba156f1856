package snapshotter_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// serveDir serves dir as local directory "context" of a new session, on a
// connection of its own (the client's).
func serveDir(t *testing.T, s *fleettest.Stack, dir string) *servedDir {
	t.Helper()
	srv, _ := serveDirKeyed(t, s, dir)
	return srv
}

// serveDirKeyed is serveDir, and returns the session's key too.
func serveDirKeyed(t *testing.T, s *fleettest.Stack, dir string) (*servedDir, session.Key) {
	t.Helper()
	nc, _ := s.Env.Connect(t, "client")
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dirs := fleettest.Dirs(t, map[string]string{"context": dir})
	srv, err := session.Serve(t.Context(), nc, key.ID, session.Config{Protocols: []session.Protocol{dirs}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return &servedDir{Server: srv, dirs: dirs}, key
}

// servedDir is a session serving a local directory.
type servedDir struct {
	*session.Server
	dirs *dirsync.Server
}

// DirStats is what the session served from its directory so far.
func (d *servedDir) DirStats() dirsync.Stats { return d.dirs.Stats() }

func localAttrs(srv *servedDir, extra ...string) map[string]string {
	a := map[string]string{source.AttrLocalSessionID: srv.ID(), source.AttrSharedKeyHint: "test-host:/src"}
	for i := 0; i+1 < len(extra); i += 2 {
		a[extra[i]] = extra[i+1]
	}
	return a
}

// A local source of 10,000 files: the first transfer sends every file
// with content; after one file changes, the next transfer (another
// session, the same shared key) sends that one file and links the rest
// from the first snapshot, which stays as it was; after a file is added
// and one removed, one file is sent and the removed one is gone.
func TestLocalTransferIsIncremental(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const files = 10000
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%04d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d00/f0000.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	withContent := files + 1 // and run.sh; empty has none

	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)

	srv1 := serveDir(t, s, dir)
	rec, _ := s.Request(t, "local://context", localAttrs(srv1), "", true)
	first := fleettest.Ready(t, rec)
	if first.Fetched != withContent {
		t.Errorf("first transfer sent %d files, want %d", first.Fetched, withContent)
	}
	if st := srv1.DirStats(); st.Files != int64(withContent) {
		t.Errorf("first session served %+v, want %d files", st, withContent)
	}
	want1 := fleettest.ReadTree(t, dir)
	diffTrees(t, "first snapshot", want1, snapshotTree(t, svc, first.SnapshotKey))
	progress := rec.OfType(events.TypeProgress)
	if len(progress) == 0 || progress[len(progress)-1].Data.(events.Progress).ID != "transferring context:" {
		t.Errorf("progress = %v, want the last one to be %q", bustest.Summary(progress), "transferring context:")
	}

	later := time.Now().Add(time.Hour)
	changed := filepath.Join(dir, "d07", "f0007.txt")
	if err := os.WriteFile(changed, []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(changed, later, later); err != nil {
		t.Fatal(err)
	}
	srv2 := serveDir(t, s, dir)
	second := fleettest.Ready(t, pullLocal(t, s, srv2))
	if second.SnapshotKey == first.SnapshotKey {
		t.Fatalf("two sessions made one snapshot %s", first.SnapshotKey)
	}
	if second.Fetched != 1 {
		t.Errorf("after a one-file change the transfer sent %d files, want 1", second.Fetched)
	}
	if st := srv2.DirStats(); st.Files != 1 || st.Bytes != int64(len("changed\n")) {
		t.Errorf("second session served %+v, want 1 file of %d bytes", st, len("changed\n"))
	}
	want2 := fleettest.ReadTree(t, dir)
	diffTrees(t, "second snapshot", want2, snapshotTree(t, svc, second.SnapshotKey))
	diffTrees(t, "first snapshot after the second transfer", want1, snapshotTree(t, svc, first.SnapshotKey))

	// A file added and one removed: one file sent, the removed one gone.
	if err := os.WriteFile(filepath.Join(dir, "d08", "new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "d09", "f0009.txt")); err != nil {
		t.Fatal(err)
	}
	third := fleettest.Ready(t, pullLocal(t, s, serveDir(t, s, dir)))
	if third.Fetched != 1 {
		t.Errorf("after one file added and one removed the transfer sent %d files, want 1", third.Fetched)
	}
	diffTrees(t, "third snapshot", fleettest.ReadTree(t, dir), snapshotTree(t, svc, third.SnapshotKey))
	diffTrees(t, "second snapshot after the third transfer", want2, snapshotTree(t, svc, second.SnapshotKey))
	// Session keys are never recorded: no build can hit them.
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []events.SnapshotReady{first, second, third} {
		if _, found, err := idx.Get(t.Context(), r.Keys[0].Digest); err != nil || found {
			t.Errorf("the cache index has session key %s: %v, %v", r.Keys[0].Key, found, err)
		}
	}
}

// snapshotTree reads the files of snapshot key of svc's store in place.
func snapshotTree(t *testing.T, svc *snapshotter.Service, key string) map[string]fleettest.File {
	t.Helper()
	dir, err := svc.Store().FilesDir(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return fleettest.ReadTree(t, dir)
}

// diffTrees reports how got differs from want, at most five lines.
func diffTrees(t *testing.T, what string, want, got map[string]fleettest.File) {
	t.Helper()
	diff := fleettest.DiffTrees(want, got)
	for i, d := range diff {
		if i == 5 {
			t.Errorf("%s: %d differences in all", what, len(diff))
			break
		}
		t.Errorf("%s: %s", what, d)
	}
}

func pullLocal(t *testing.T, s *fleettest.Stack, srv *servedDir) *bustest.Recorder {
	t.Helper()
	rec, _ := s.Request(t, "local://context", localAttrs(srv), "", true)
	return rec
}

// Patterns select what is sent, with BuildKit's semantics (fsutil): an
// exclude with a re-include, an include of one directory. A transfer
// after another with the same shared key sends only what that one did not
// have, nothing when it had it all, unless local.differ is none: then it
// sends every file.
func TestLocalPatterns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, p := range []string{"a/keep.go", "a/drop.txt", "a/keep.txt", "b/x.go", "top.go"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	srv := serveDir(t, s, dir)
	for _, tc := range []struct {
		name  string
		attrs []string
		want  []string
	}{
		{"exclude and re-include", []string{source.AttrExcludePatterns, `["**/*.txt","!a/keep.txt"]`}, []string{"a", "a/keep.go", "a/keep.txt", "b", "b/x.go", "top.go"}},
		{"include", []string{source.AttrIncludePatterns, `["a"]`}, []string{"a", "a/drop.txt", "a/keep.go", "a/keep.txt"}},
		{"include and exclude", []string{source.AttrIncludePatterns, `["a","top.go"]`, source.AttrExcludePatterns, `["a/*.txt"]`}, []string{"a", "a/keep.go", "top.go"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, _ := s.Request(t, "local://context", localAttrs(srv, tc.attrs...), "", true)
			ready := fleettest.Ready(t, rec)
			got := slices.Sorted(maps.Keys(snapshotTree(t, svc, ready.SnapshotKey)))
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("snapshot holds %v, want %v", got, tc.want)
			}
		})
	}
	again := func(differ string) int {
		rec, _ := s.Request(t, "local://context", localAttrs(serveDir(t, s, dir), source.AttrLocalDiffer, differ), "", true)
		return fleettest.Ready(t, rec).Fetched
	}
	// The base is the last transfer, of two of the five files.
	if n := again("metadata"); n != 3 {
		t.Errorf("the whole directory after a part of it sent %d files, want 3", n)
	}
	if n := again("metadata"); n != 0 {
		t.Errorf("an unchanged directory sent %d files with the metadata differ, want 0", n)
	}
	if n := again("none"); n != 5 {
		t.Errorf("differ none sent %d files, want 5", n)
	}
}

// A client that left: the snapshot fails with BuildKit's message, after
// one attempt.
func TestLocalSnapshotNeedsTheSession(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	srv, key := serveDirKeyed(t, s, t.TempDir())
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The client signed its request before it left: the test holds the
	// session's key again to sign it.
	t.Cleanup(session.Hold(key))
	rec, _ := s.Request(t, "local://context", localAttrs(srv), "", true)
	e := rec.Wait(t, 20*time.Second, events.TypeSnapshotFailed, events.TypeSnapshotReady)
	f, ok := e.Data.(events.SnapshotFailed)
	if !ok || !strings.Contains(f.Reason, "no active session for "+srv.ID()) || f.Attempts != 1 {
		t.Errorf("got %s, want snapshot.failed with %q after 1 attempt", bustest.Summary([]events.Event{e}), "no active session for "+srv.ID())
	}
}

// fakeSession answers a session's list and files requests with what the
// test says (files returns the answer to a files request), the way a
// hostile or broken client could: a keyed session, whose answers it
// signs, and whose key the test holds (so requests naming it are signed).
func fakeSession(t *testing.T, s *fleettest.Stack, entries []dirsync.Entry, files func(m *nats.Msg) *nats.Msg) string {
	t.Helper()
	nc, _ := s.Env.Connect(t, "fake-client")
	key := fleettest.HoldKey(t)
	id := key.ID
	body, err := json.Marshal(dirsync.ListReply{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	respond := func(m, reply *nats.Msg) {
		if err := key.SignAnswer(m, reply); err == nil {
			_ = m.RespondMsg(reply)
		}
	}
	_, err = nc.Subscribe(session.Subject(id, dirsync.OpList), func(m *nats.Msg) {
		respond(m, &nats.Msg{Header: nats.Header{session.HeaderSize: []string{fmt.Sprint(len(body))}}, Data: body})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(session.Subject(id, session.OpKey), func(m *nats.Msg) { respond(m, key.KeyAnswer()) }); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(session.Subject(id, dirsync.OpFiles), func(m *nats.Msg) {
		body, err := key.OpenRequest(m)
		if err != nil {
			t.Errorf("a files request: %v", err)
			return
		}
		opened := *m
		opened.Data = body
		respond(m, files(&opened))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return id
}

// A listing that puts a file below a symlink pointing out of the snapshot
// is refused, and nothing is written where the symlink points.
func TestLocalRefusesPathsBelowASymlink(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	id := fakeSession(t, s, []dirsync.Entry{
		{Path: "a", Mode: fs.ModeSymlink | 0o777, Linkname: outside},
		{Path: "a/pwned", Mode: 0o644, Size: 1},
	}, func(*nats.Msg) *nats.Msg {
		return &nats.Msg{Header: nats.Header{dirsync.HeaderParts: []string{"1"}, session.HeaderSize: []string{"1"}}, Data: []byte("x")}
	})
	rec, _ := s.Request(t, "local://context", map[string]string{source.AttrLocalSessionID: id}, "", true)
	e := rec.Wait(t, 20*time.Second, events.TypeSnapshotFailed, events.TypeSnapshotReady)
	if f, ok := e.Data.(events.SnapshotFailed); !ok || !strings.Contains(f.Reason, `path "a/pwned" from the session is below symlink "a"`) || f.Code != "invalid" {
		t.Errorf("got %s, want snapshot.failed: below symlink", bustest.Summary([]events.Event{e}))
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the transfer wrote %v outside the snapshot", entries)
	}
	assertNoSnapshots(t, svc)
}

// A snapshotter that loses its connection mid-transfer (the client
// stalls, the node's network fails) and stops leaves no committed and no
// active snapshot; a replica started afterwards on the same data dir gets
// the request again and makes it.
func TestLocalCancelledTransferLeavesNothing(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	dataDir := t.TempDir()
	node, svc1 := s.Snapshotter(t, func(c *snapshotter.Config) { c.DataDir = dataDir })
	asked := make(chan struct{}, 16)
	release := make(chan struct{})
	id := fakeSession(t, s, []dirsync.Entry{{Path: "f", Mode: 0o644, Size: 3, ModTime: 1}}, func(*nats.Msg) *nats.Msg {
		asked <- struct{}{}
		<-release
		return &nats.Msg{Header: nats.Header{dirsync.HeaderParts: []string{"3"}, session.HeaderSize: []string{"3"}}, Data: []byte("abc")}
	})
	defer close(release)
	rec, _ := s.Request(t, "local://context", map[string]string{source.AttrLocalSessionID: id}, "", true)
	select {
	case <-asked:
	case <-time.After(20 * time.Second):
		t.Fatal("the snapshotter never asked for the file")
	}
	node.NC.Close()
	node.Stop()
	if err := svc1.Close(); err != nil {
		t.Fatal(err)
	}
	// A process the package's git tests fork at that moment holds the
	// lock's file until it execs: wait for it.
	var st *snapshot.Store
	var err error
	fleettest.WaitFor(t, func() bool {
		st, err = snapshot.Open(t.Context(), dataDir, snapshot.KindAuto)
		return !errors.Is(err, snapshot.ErrLocked)
	})
	if err != nil {
		t.Fatal(err)
	}
	assertNoSnapshotsIn(t, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The request is redelivered to a new replica on the same data dir;
	// the client answers now.
	release <- struct{}{}
	go func() {
		for range asked {
			release <- struct{}{}
		}
	}()
	_, svc := s.Snapshotter(t, func(c *snapshotter.Config) { c.DataDir = dataDir })
	end := rec.Wait(t, 20*time.Second, events.TypeSnapshotReady, events.TypeSnapshotFailed)
	if f, ok := end.Data.(events.SnapshotFailed); ok {
		t.Fatalf("snapshot failed after the restart: %+v", f)
	}
	ready := fleettest.Ready(t, rec)
	if got := snapshotTree(t, svc, ready.SnapshotKey); len(got) != 1 || got["f"].Content != "abc" {
		t.Errorf("snapshot after the restart = %v", got)
	}
}

func assertNoSnapshots(t *testing.T, svc *snapshotter.Service) {
	t.Helper()
	assertNoSnapshotsIn(t, svc.Store())
}

func assertNoSnapshotsIn(t *testing.T, st *snapshot.Store) {
	t.Helper()
	if got := fleettest.ReadStore(t, st); !got.Empty() {
		t.Errorf("store holds %+v, want nothing", got)
	}
}
