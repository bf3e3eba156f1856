package snapshotter_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// gitRepo is a repository the test makes and serves over http (with
// counters) and git://: two commits on main, a lightweight tag v1 on the
// first, an annotated tag v2 on the second, a submodule.
type gitRepo struct {
	root          *gitremotetest.Root
	web           *gitremotetest.HTTP
	work          *gitremotetest.Work
	first, second string
	tag           string // v2's tag object
	lib           string // the submodule's commit
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	g := &gitRepo{root: gitremotetest.NewRoot(t)}
	g.web = gitremotetest.ServeHTTP(t, g.root)

	lib := gitremotetest.NewWork(t)
	lib.Write("lib.txt", "lib\n", 0o644)
	g.lib = lib.Commit("lib")
	lib.Push(g.root, "lib")

	w := gitremotetest.NewWork(t)
	w.Write("README", "first\n", 0o644)
	w.Write("src/main.go", "package main\n", 0o644)
	g.first = w.Commit("first")
	w.Tag("v1")
	w.Write("README", "second\n", 0o644)
	w.Write("src/run.sh", "#!/bin/sh\n", 0o755)
	w.Symlink("src/main.go", "main-link")
	w.Submodule("vendor/lib", "../lib.git", g.lib)
	g.second = w.Commit("second")
	g.tag = w.AnnotatedTag("v2", "release 2")
	w.Push(g.root, "repo")
	g.work = w
	return g
}

// source is the identifier and attributes LLB makes of the repository
// at fragment.
func (g *gitRepo) source(fragment string, kv ...string) (string, map[string]string) {
	_, hostPath, _ := strings.Cut(g.web.URL, "://")
	attrs := map[string]string{source.AttrFullRemoteURL: g.web.URL + "repo.git"}
	for i := 0; i+1 < len(kv); i += 2 {
		attrs[kv[i]] = kv[i+1]
	}
	return "git://" + hostPath + "repo.git#" + fragment, attrs
}

func (g *gitRepo) pull(t *testing.T, s *fleettest.Stack, fragment string, kv ...string) *bustest.Recorder {
	t.Helper()
	identifier, attrs := g.source(fragment, kv...)
	rec, _ := s.Request(t, identifier, attrs, "", true)
	return rec
}

// snapshotDir is a read-only view of the content snapshot key on the node
// of svc, until the end of the test.
func snapshotDir(t *testing.T, svc *snapshotter.Service, key string) string {
	t.Helper()
	sn := svc.Store().Snapshotter()
	view := fmt.Sprintf("test-view-%d", time.Now().UnixNano())
	mounts, err := sn.View(t.Context(), view, key)
	if err != nil {
		t.Fatalf("view of %s: %v", key, err)
	}
	t.Cleanup(func() { _ = sn.Remove(t.Context(), view) })
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("view of %s: mounts %+v, want one bind mount", key, mounts)
	}
	return mounts[0].Source
}

// fetchProgress returns the objects of each "fetch" progress event.
func fetchProgress(rec *bustest.Recorder) []string {
	var out []string
	for _, e := range rec.OfType(events.TypeProgress) {
		if p := e.Data.(events.Progress); strings.HasPrefix(p.ID, "fetch ") {
			out = append(out, fmt.Sprintf("%s %d", p.ID[strings.LastIndex(p.ID, " ")+1:], p.Current))
		}
	}
	return out
}

// A pull of a git source: the puller asks for a checkout of the commit
// (remote without credentials, the full ref), the snapshot holds the
// tree with modes, symlinks and the submodule; a second pull is a hit;
// pulls at other refs fetch only what the node's cache lacks; a kept .git
// is a repository git accepts; subdir, skip-submodules and mtime=commit do
// what BuildKit does.
func TestGitPull(t *testing.T) {
	t.Parallel()
	g := newGitRepo(t)
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)

	rec := g.pull(t, s, "v2")
	ready := fleettest.Ready(t, rec)
	reqs := rec.OfType(events.TypeSnapshotRequested)
	if len(reqs) != 1 {
		t.Fatalf("%d snapshot.requested", len(reqs))
	}
	want := &events.Content{Git: &events.GitContent{Remote: g.web.URL + "repo.git", Ref: "refs/tags/v2", Commit: g.second}}
	if diff := cmp.Diff(want, reqs[0].Data.(events.SnapshotRequested).Content); diff != "" {
		t.Errorf("content (-want +got):\n%s", diff)
	}
	if ready.Keys[0].Key != g.second || ready.SnapshotKey != "content-"+source.SolverDigest(g.second).Encoded() {
		t.Errorf("ready %+v", ready)
	}
	full := []string{
		`.gitmodules 644 "[submodule \"vendor/lib\"]\n\tpath = vendor/lib\n\turl = ../lib.git\n"`,
		`README 644 "second\n"`,
		"main-link -> src/main.go",
		"src/ 755",
		`src/main.go 644 "package main\n"`,
		`src/run.sh 755 "#!/bin/sh\n"`,
		"vendor/ 755",
		"vendor/lib/ 755",
		`vendor/lib/lib.txt 644 "lib\n"`,
	}
	if diff := cmp.Diff(full, gitremotetest.Tree(t, snapshotDir(t, svc, ready.SnapshotKey))); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	// The tag with its history, then the submodule (found among the
	// branches and tags of its remote, which does not fetch by commit).
	wantFetches := []string{fmt.Sprintf("refs/tags/v2 %d", objects(t, g.work.Dir, "v2")), "refs/heads/*,refs/tags/* 3"}
	if got := fetchProgress(rec); fmt.Sprint(got) != fmt.Sprint(wantFetches) {
		t.Errorf("fetches %v, want %v", got, wantFetches)
	}
	packs := g.web.UploadPacks.Load()

	// The same source again: a hit, no snapshot.requested, no fetch.
	again := g.pull(t, s, "v2")
	if hit, ok := fleettest.PullEnd(t, again).Data.(events.CacheHit); !ok || hit.Record.SnapshotKey != ready.SnapshotKey {
		t.Fatalf("second pull: %v", bustest.Summary(again.Events()))
	}
	if len(again.OfType(events.TypeSnapshotRequested)) != 0 || g.web.UploadPacks.Load() != packs {
		t.Errorf("the hit asked for a snapshot or fetched")
	}

	// An older commit the node's cache holds: a new snapshot, no fetch.
	older := g.pull(t, s, "v1")
	r := fleettest.Ready(t, older)
	if got := fetchProgress(older); len(got) != 0 || g.web.UploadPacks.Load() != packs {
		t.Errorf("v1 after v2 fetched %v", got)
	}
	if diff := cmp.Diff([]string{`README 644 "first\n"`, "src/ 755", `src/main.go 644 "package main\n"`},
		gitremotetest.Tree(t, snapshotDir(t, svc, r.SnapshotKey))); diff != "" {
		t.Errorf("v1 snapshot (-want +got):\n%s", diff)
	}

	// main moves on: the next pull fetches the new commit's objects only.
	g.work.Write("src/main.go", "package main // third\n", 0o644)
	third := g.work.Commit("third")
	g.work.Push(g.root, "repo")
	moved := g.pull(t, s, "main", source.AttrGitSkipSubmodules, "true")
	r = fleettest.Ready(t, moved)
	if got, want := fetchProgress(moved), []string{fmt.Sprintf("refs/heads/main %d", objects(t, g.work.Dir, g.second+".."+third))}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("main after a push fetched %v, want %v", got, want)
	}
	if g.web.UploadPacks.Load() != packs+1 {
		t.Errorf("%d upload-packs for one moved branch", g.web.UploadPacks.Load()-packs)
	}
	if r.Keys[0].Key != third+"(skip-submodules)" {
		t.Errorf("key %s", r.Keys[0].Key)
	}
	dir := snapshotDir(t, svc, r.SnapshotKey)
	if got := gitremotetest.Tree(t, filepath.Join(dir, "vendor")); fmt.Sprint(got) != "[lib/ 755]" {
		t.Errorf("skipped submodule: %v", got)
	}

	t.Run("keepgitdir", func(t *testing.T) {
		r := fleettest.Ready(t, g.pull(t, s, "v2", source.AttrKeepGitDir, "true"))
		if r.Keys[0].Key != g.tag+".git#refs/tags/v2" {
			t.Errorf("key %s", r.Keys[0].Key)
		}
		dir := snapshotDir(t, svc, r.SnapshotKey)
		if got := gitremotetest.Tree(t, dir); got[0] != ".git/" || len(got) != len(full)+1 {
			t.Errorf("kept tree %v", got)
		}
		// git reads the snapshot through a copy (the view is read-only).
		cp := t.TempDir()
		gitremotetest.Run(t, cp, nil, "clone", "--quiet", "--no-local", "file://"+dir, "clone")
		for args, want := range map[string]string{
			"cat-file -t refs/tags/v2":          "tag",
			"rev-parse HEAD":                    g.second,
			"remote get-url origin":             g.web.URL + "repo.git",
			"rev-parse --is-shallow-repository": "true",
		} {
			if got := gitremotetest.Run(t, dir, []string{"GIT_OPTIONAL_LOCKS=0"}, strings.Fields(args)...); got != want {
				t.Errorf("git %s = %q, want %q", args, got, want)
			}
		}
	})
	t.Run("subdir", func(t *testing.T) {
		r := fleettest.Ready(t, g.pull(t, s, "v2:src"))
		if diff := cmp.Diff([]string{`main.go 644 "package main\n"`, `run.sh 755 "#!/bin/sh\n"`},
			gitremotetest.Tree(t, snapshotDir(t, svc, r.SnapshotKey))); diff != "" {
			t.Errorf("subdir (-want +got):\n%s", diff)
		}
	})
	t.Run("mtime=commit", func(t *testing.T) {
		r := fleettest.Ready(t, g.pull(t, s, "v1", source.AttrGitMTime, "commit"))
		if r.Keys[0].Key != g.first+"(mtime=commit)" {
			t.Errorf("key %s", r.Keys[0].Key)
		}
		dir := snapshotDir(t, svc, r.SnapshotKey)
		err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err == nil && !fi.ModTime().Equal(gitremotetest.Epoch) {
				t.Errorf("%s: mtime %v, want the commit's %v", p, fi.ModTime(), gitremotetest.Epoch)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	s.ConsumerIdle(t, events.ConsumerSnapshotter)
}

// objects counts the objects `git rev-list --objects <rev>` lists in the
// work tree dir: what a fetch of rev into an empty repository (or, for
// "a..b", into one that has a) receives.
func objects(t *testing.T, dir, rev string) int {
	t.Helper()
	return len(strings.Split(gitremotetest.Run(t, dir, nil, "rev-list", "--objects", rev), "\n"))
}

// Many builds of one repository at several refs, at once, on one node:
// the node keeps one repository for the remote and fetches at most once
// per commit that was missing; each snapshot is made once.
func TestGitPullsShareOneRepository(t *testing.T) {
	t.Parallel()
	g := newGitRepo(t)
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t, func(c *snapshotter.Config) { c.Concurrency = 4 })
	fragments := []string{"v1", "v2", "main:src", "v1", "v2", "main:src", "main", "v1"}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		made = map[string]int{}
	)
	for _, f := range fragments {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := g.pull(t, s, f, source.AttrGitSkipSubmodules, "true")
			switch e := fleettest.PullEnd(t, rec).Data.(type) {
			case events.SnapshotReady:
				mu.Lock()
				if e.Fetched > 0 {
					made[e.SnapshotKey]++
				}
				mu.Unlock()
			case events.CacheHit:
			default:
				t.Errorf("pull of %s ended with %v", f, bustest.Summary(rec.Events()))
			}
		}()
	}
	wg.Wait()
	// v2 and main are one commit, so one key (an annotated tag's key is
	// its commit's).
	if len(made) != 3 {
		t.Errorf("%d snapshots made, want 3 (v1, v2 = main, main:src): %v", len(made), made)
	}
	for key, n := range made {
		if n != 1 {
			t.Errorf("snapshot %s made %d times", key, n)
		}
	}
	if n := g.web.UploadPacks.Load(); n < 1 || n > 2 {
		t.Errorf("%d upload-packs for two commits of one remote", n)
	}
	repos, err := os.ReadDir(filepath.Join(svc.Store().Root(), "git"))
	if err != nil || len(repos) != 1 {
		t.Errorf("git cache holds %v (%v), want one repository", repos, err)
	}
}

// A snapshot whose commit the remote does not have fails clearly, once.
func TestGitSnapshotOfAMissingCommit(t *testing.T) {
	t.Parallel()
	g := newGitRepo(t)
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	missing := strings.Repeat("a", 40)
	rec := g.pull(t, s, "main", source.AttrGitFetchByCommit, "true", source.AttrGitChecksum, missing)
	e := fleettest.PullEnd(t, rec)
	f, ok := e.Data.(events.SnapshotFailed)
	if !ok {
		t.Fatalf("pull ended with %v", bustest.Summary(rec.Events()))
	}
	wantReason := "fetched ref refs/heads/main does not match expected commit " + missing + " and commit can not be found in the repository"
	if !strings.Contains(f.Reason, wantReason) || f.Code != "not-found" || f.Attempts != 1 {
		t.Errorf("failed with %q (%s, %d attempts), want %q (not-found, 1)", f.Reason, f.Code, f.Attempts, wantReason)
	}
}
