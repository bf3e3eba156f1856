package gitremote_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/gitremote"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// bundle is the BuildKit fixture repository.
const bundle = "../../testdata/sources/git/repo.bundle"

const (
	fxMain = "84ce3a5707faf3d46c1cd2c71e2187e37890178b"
	fxV1   = "ee0144110bb25cd77d9a9f206f9ef475271d7244"
	fxV2   = "9810617a87f11a979d8ba7ae1c4b749abe93f67c"
)

// fixture serves the BuildKit fixture as repo.git over git:// and http://.
func fixture(t *testing.T) (root *gitremotetest.Root, daemon *gitremotetest.Daemon, web *gitremotetest.HTTP) {
	t.Helper()
	root = gitremotetest.NewRoot(t)
	root.CloneBundle(t, "repo", bundle)
	return root, gitremotetest.ServeDaemon(t, root), gitremotetest.ServeHTTP(t, root)
}

// List gives what git ls-remote gives, over both transports.
func TestList(t *testing.T) {
	t.Parallel()
	_, daemon, web := fixture(t)
	want := []source.GitRef{
		{Name: "HEAD", Hash: fxMain, Target: "refs/heads/main"},
		{Name: "refs/heads/main", Hash: fxMain},
		{Name: "refs/tags/v1", Hash: fxV1},
		{Name: "refs/tags/v2", Hash: fxV2},
		{Name: "refs/tags/v2^{}", Hash: fxMain},
	}
	for _, base := range []string{daemon.URL, web.URL} {
		got, err := gitremote.List(t.Context(), base+"repo.git", gitremote.Auth{})
		if err != nil {
			t.Fatalf("List(%s): %v", base, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("List(%s) (-want +got):\n%s", base, diff)
		}
	}
}

func TestListErrors(t *testing.T) {
	t.Parallel()
	_, daemon, web := fixture(t)
	for _, tc := range []struct {
		name, remote, text string
		class              error
	}{
		{"no such repository (git)", daemon.URL + "nope.git", "repository not found", failure.ErrNotFound},
		{"no such repository (http)", web.URL + "nope.git", "repository not found", failure.ErrNotFound},
		{"ssh", "ssh://git@example.com/repo.git", "ssh remotes are not supported yet", failure.ErrInvalid},
		{"scp-like", "git@example.com:repo.git", "ssh remotes are not supported yet", failure.ErrInvalid},
		{"file", "file:///etc", "protocol file is not supported", failure.ErrInvalid},
		{"credentials", "https://user:hunter2@example.com/repo.git", "credentials in the URL are not supported", failure.ErrInvalid},
		{"nothing listening", "git://127.0.0.1:1/repo.git", "failed to fetch remote git://127.0.0.1:1/repo.git", failure.ErrUnavailable},
		{"git to an http server", "git://" + strings.TrimPrefix(web.URL, "http://") + "repo.git", "the server speaks http, not git's protocol", failure.ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := gitremote.List(t.Context(), tc.remote, gitremote.Auth{})
			if err == nil || !strings.Contains(err.Error(), tc.text) || !errors.Is(err, tc.class) {
				t.Fatalf("List(%s) = %v, want %q (%v)", tc.remote, err, tc.text, tc.class)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// project is a repository with every kind of entry, two tags and two
// submodules (one nested in the other), served over git:// and http://.
type project struct {
	root          *gitremotetest.Root
	daemon        *gitremotetest.Daemon
	web           *gitremotetest.HTTP
	work          *gitremotetest.Work
	first, second string // commits of main
	v2Tag         string // tag object of v2 (annotated, on second)
	lib, deep     string // the submodules' commits
}

func newProject(t *testing.T) *project {
	t.Helper()
	p := &project{root: gitremotetest.NewRoot(t)}
	p.daemon = gitremotetest.ServeDaemon(t, p.root)
	p.web = gitremotetest.ServeHTTP(t, p.root)

	deep := gitremotetest.NewWork(t)
	deep.Write("deep.txt", "deep\n", 0o644)
	p.deep = deep.Commit("deep")
	deep.Push(p.root, "deep")

	lib := gitremotetest.NewWork(t)
	lib.Write("inner/lib.txt", "lib\n", 0o644)
	lib.Write("inner/tool", "#!/bin/sh\n", 0o755)
	// Nested, by absolute URL: the daemon serves it.
	lib.Submodule("vendor/deep", p.daemon.URL+"deep.git", p.deep)
	p.lib = lib.Commit("lib")
	lib.Push(p.root, "lib")

	w := gitremotetest.NewWork(t)
	w.Write("README", "first\n", 0o644)
	w.Write("dir/sub/file.txt", "in a subdir\n", 0o644)
	p.first = w.Commit("first")
	w.Tag("v1")
	w.Write("README", "second\n", 0o644)
	w.Write("bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
	w.Symlink("../README", "dir/readme-link")
	w.Symlink("/etc/passwd", "absolute-link")
	// Relative to the superproject's URL: next to it on the same server.
	w.Submodule("mod", "../lib.git", p.lib)
	p.second = w.Commit("second")
	p.v2Tag = w.AnnotatedTag("v2", "release 2")
	w.Push(p.root, "repo")
	p.work = w
	return p
}

func checkout(t *testing.T, c *gitremote.Cache, req gitremote.CheckoutRequest) (gitremote.CheckoutResult, string) {
	t.Helper()
	req.Dir = t.TempDir()
	res, err := c.Checkout(t.Context(), req)
	if err != nil {
		t.Fatalf("Checkout(%+v): %v", req, err)
	}
	return res, req.Dir
}

func TestCheckout(t *testing.T) {
	t.Parallel()
	p := newProject(t)
	c, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	remote := p.daemon.URL + "repo.git"
	full := []string{
		`README 644 "second\n"`,
		"absolute-link -> /etc/passwd",
		"bin/ 755",
		`bin/run.sh 755 "#!/bin/sh\necho run\n"`,
		"dir/ 755",
		"dir/readme-link -> ../README",
		"dir/sub/ 755",
		`dir/sub/file.txt 644 "in a subdir\n"`,
		"mod/ 755",
		`mod/.gitmodules 644 "[submodule \"vendor/deep\"]\n\tpath = vendor/deep\n\turl = ` + p.daemon.URL + `deep.git\n"`,
		"mod/inner/ 755",
		`mod/inner/lib.txt 644 "lib\n"`,
		`mod/inner/tool 755 "#!/bin/sh\n"`,
		"mod/vendor/ 755",
		"mod/vendor/deep/ 755",
		`mod/vendor/deep/deep.txt 644 "deep\n"`,
	}
	withGitmodules := append([]string{`.gitmodules 644 "[submodule \"mod\"]\n\tpath = mod\n\turl = ../lib.git\n"`}, full...)
	sort.Strings(withGitmodules)
	for _, tc := range []struct {
		name string
		req  gitremote.CheckoutRequest
		want []string
	}{
		{"everything, submodules recursively", gitremote.CheckoutRequest{Remote: remote, Ref: "refs/heads/main", Commit: p.second}, withGitmodules},
		{"by annotated tag object", gitremote.CheckoutRequest{Remote: remote, Ref: "refs/tags/v2", Commit: p.v2Tag}, withGitmodules},
		{"first commit", gitremote.CheckoutRequest{Remote: remote, Ref: "refs/tags/v1", Commit: p.first},
			[]string{`README 644 "first\n"`, "dir/ 755", "dir/sub/ 755", `dir/sub/file.txt 644 "in a subdir\n"`}},
		{"subdir", gitremote.CheckoutRequest{Remote: remote, Commit: p.second, Subdir: "dir"},
			[]string{"readme-link -> ../README", "sub/ 755", `sub/file.txt 644 "in a subdir\n"`}},
		{"subdir in a submodule", gitremote.CheckoutRequest{Remote: remote, Commit: p.second, Subdir: "mod/inner"},
			[]string{`lib.txt 644 "lib\n"`, `tool 755 "#!/bin/sh\n"`}},
		{"skip submodules", gitremote.CheckoutRequest{Remote: remote, Commit: p.second, SkipSubmodules: true, Subdir: "/mod/"},
			[]string{}},
		{"keepgitdir ignored with a subdir", gitremote.CheckoutRequest{Remote: remote, Commit: p.second, Subdir: "bin", KeepGitDir: true},
			[]string{`run.sh 755 "#!/bin/sh\necho run\n"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, dir := checkout(t, c, tc.req)
			if diff := cmp.Diff(tc.want, gitremotetest.Tree(t, dir), cmp.Comparer(func(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") })); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
			wantCommit := tc.req.Commit
			if wantCommit == p.v2Tag {
				wantCommit = p.second
			}
			if res.Commit != wantCommit {
				t.Errorf("commit %s, want %s", res.Commit, wantCommit)
			}
		})
	}
}

// A kept .git is a repository git itself accepts: clean status, the
// commit detached, the annotated tag as a tag object, shallow, origin set.
// With CommitTime, everything has the commit's time.
func TestCheckoutKeepGitDir(t *testing.T) {
	t.Parallel()
	p := newProject(t)
	c, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	remote := p.web.URL + "repo.git"
	res, dir := checkout(t, c, gitremote.CheckoutRequest{Remote: remote, Ref: "refs/tags/v2", Commit: p.second, KeepGitDir: true, CommitTime: true})
	// Before any git command: git status rewrites a racily clean index.
	want := gitremotetest.Epoch.Add(time.Hour)
	if !res.CommitTime.Equal(want) {
		t.Errorf("commit time %v, want %v", res.CommitTime, want)
	}
	err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err == nil && !fi.ModTime().Equal(want) {
			t.Errorf("%s has mtime %v, want %v", p, fi.ModTime(), want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	git := func(args ...string) string { return gitremotetest.Run(t, dir, nil, args...) }
	for _, tc := range []struct{ args, want string }{
		{"status --porcelain --ignore-submodules=none", ""},
		{"rev-parse HEAD", p.second},
		{"cat-file -t refs/tags/v2", "tag"},
		{"rev-parse refs/tags/v2", p.v2Tag},
		{"describe --tags", "v2"},
		{"rev-parse --is-shallow-repository", "true"},
		{"remote get-url origin", remote},
		{"ls-files --stage mod", "160000 " + p.lib + " 0\tmod"},
		{"diff-index --quiet HEAD --", ""},
	} {
		if got := git(strings.Fields(tc.args)...); got != tc.want {
			t.Errorf("git %s = %q, want %q", tc.args, got, tc.want)
		}
	}
	git("fsck", "--no-dangling")

	// The commit of a lightweight tag: the ref points at the commit.
	_, dir = checkout(t, c, gitremote.CheckoutRequest{Remote: remote, Ref: "refs/tags/v1", Commit: p.first, KeepGitDir: true})
	if got := gitremotetest.Run(t, dir, nil, "rev-parse", "HEAD", "refs/tags/v1"); got != p.first+"\n"+p.first {
		t.Errorf("HEAD and v1 = %q", got)
	}
	if got := gitremotetest.Run(t, dir, nil, "rev-parse", "--is-shallow-repository"); got != "false" {
		t.Errorf("a root commit's checkout is shallow: %s", got)
	}
}

// A checkout fetches only what the cache lacks: nothing when it has the
// commit, and only the new objects when a branch moved on.
func TestCheckoutFetchesOnlyWhatIsMissing(t *testing.T) {
	t.Parallel()
	p := newProject(t)
	c, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	remote := p.web.URL + "repo.git"
	// Through an annotated tag: the repository then holds a tag object,
	// which a remote does not take as a have for its commit's history.
	res, _ := checkout(t, c, gitremote.CheckoutRequest{Remote: remote, Ref: "refs/tags/v2", Commit: p.second, SkipSubmodules: true})
	if len(res.Fetches) != 1 || res.Fetches[0].Want != "refs/tags/v2" {
		t.Fatalf("first checkout fetched %+v", res.Fetches)
	}
	all := strings.Count(gitremotetest.Run(t, p.work.Dir, nil, "rev-list", "--objects", "v2"), "\n") + 1
	if res.Fetches[0].Objects != all {
		t.Errorf("first fetch received %d objects, want the %d of v2", res.Fetches[0].Objects, all)
	}
	packs, firstBytes := p.web.UploadPacks.Load(), p.web.PackBytes.Load()

	// An older commit, already there: no request at all.
	res, _ = checkout(t, c, gitremote.CheckoutRequest{Remote: remote, Ref: "refs/tags/v1", Commit: p.first})
	if len(res.Fetches) != 0 || p.web.UploadPacks.Load() != packs {
		t.Errorf("checkout of a commit the cache has fetched %+v (%d upload-packs)", res.Fetches, p.web.UploadPacks.Load()-packs)
	}

	// main moves on by one commit that changes one file.
	p.work.Write("README", "third\n", 0o644)
	third := p.work.Commit("third")
	p.work.Push(p.root, "repo")
	res, dir := checkout(t, c, gitremote.CheckoutRequest{Remote: remote, Ref: "refs/heads/main", Commit: third, SkipSubmodules: true})
	newObjects := strings.Count(gitremotetest.Run(t, p.work.Dir, nil, "rev-list", "--objects", p.second+".."+third), "\n") + 1
	if len(res.Fetches) != 1 || res.Fetches[0].Objects != newObjects {
		t.Errorf("fetch after one commit: %+v, want %d objects", res.Fetches, newObjects)
	}
	if b := p.web.PackBytes.Load() - firstBytes; b >= firstBytes {
		t.Errorf("the second fetch sent %d bytes, the first %d", b, firstBytes)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "README")); err != nil || string(data) != "third\n" {
		t.Errorf("README = %q, %v", data, err)
	}
	t.Logf("objects: %d, then %d; upload-pack bytes: %d, then %d", all, newObjects, firstBytes, p.web.PackBytes.Load()-firstBytes)
}

// A commit named without a ref is fetched by its id when the remote
// allows it, and found among all branches and tags when it does not.
func TestCheckoutByCommit(t *testing.T) {
	t.Parallel()
	p := newProject(t)
	for _, tc := range []struct {
		name  string
		allow bool
		want  []string
	}{
		{"remote refuses commits", false, []string{"refs/heads/*,refs/tags/*"}},
		{"remote allows commits", true, []string{p.first}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := gitremotetest.NewRoot(t)
			p.work.Push(root, "repo")
			if tc.allow {
				root.Config(t, "repo", "uploadpack.allowAnySHA1InWant", "true")
			}
			daemon := gitremotetest.ServeDaemon(t, root)
			c, err := gitremote.NewCache(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			res, dir := checkout(t, c, gitremote.CheckoutRequest{Remote: daemon.URL + "repo.git", Commit: p.first})
			var wants []string
			for _, f := range res.Fetches {
				wants = append(wants, f.Want)
			}
			if diff := cmp.Diff(tc.want, wants); diff != "" {
				t.Errorf("fetches (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(filepath.Join(dir, "dir/sub/file.txt")); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCheckoutErrors(t *testing.T) {
	t.Parallel()
	p := newProject(t)
	remote := p.daemon.URL + "repo.git"

	// A tree git would refuse: a .GIT entry, and a commit whose
	// submodule points at a file:// URL.
	blob := p.work.Git("hash-object", "-w", "README")
	treeWithGit := gitremotetest.RunInput(t, p.work.Dir, nil, "100644 blob "+blob+"\t.GIT\n", "mktree")
	dotGit := p.work.Git("commit-tree", treeWithGit, "-m", "evil")
	p.work.Git("update-ref", "refs/heads/evil", dotGit)
	fileSub := gitremotetest.NewWork(t)
	fileSub.Submodule("m", "file:///etc", p.first)
	fileSubCommit := fileSub.Commit("file submodule")
	fileSub.Push(p.root, "filesub")
	p.work.Push(p.root, "repo")

	c, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		req   gitremote.CheckoutRequest
		text  string
		class error
	}{
		{"unknown commit", gitremote.CheckoutRequest{Remote: remote, Ref: "refs/heads/main", Commit: strings.Repeat("a", 40)},
			"fetched ref refs/heads/main does not match expected commit " + strings.Repeat("a", 40) + " and commit can not be found in the repository", failure.ErrNotFound},
		{"no such repository", gitremote.CheckoutRequest{Remote: p.daemon.URL + "nope.git", Commit: p.first}, "repository not found", failure.ErrNotFound},
		{"malformed commit", gitremote.CheckoutRequest{Remote: remote, Commit: "abc"}, `invalid commit sha "abc"`, failure.ErrInvalid},
		{"sha256 commit", gitremote.CheckoutRequest{Remote: remote, Commit: strings.Repeat("b", 64)}, "SHA-256 repositories are not supported", failure.ErrInvalid},
		{"missing subdir", gitremote.CheckoutRequest{Remote: remote, Commit: p.second, Subdir: "dir/nope"}, "failed to open subdir dir/nope: dir/nope does not exist", failure.ErrNotFound},
		{"subdir is a file", gitremote.CheckoutRequest{Remote: remote, Commit: p.second, Subdir: "README"}, "failed to open subdir README: README is not a directory", failure.ErrInvalid},
		{"a .git in the tree", gitremote.CheckoutRequest{Remote: remote, Ref: "refs/heads/evil", Commit: dotGit}, `tree entry ".GIT"`, failure.ErrInvalid},
		{"file submodule", gitremote.CheckoutRequest{Remote: p.daemon.URL + "filesub.git", Commit: fileSubCommit}, "submodule m: git remote file:///etc: protocol file is not supported", failure.ErrInvalid},
		{"ssh remote", gitremote.CheckoutRequest{Remote: "ssh://git@example.com/r.git", Commit: p.first}, "ssh remotes are not supported yet", failure.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Checkout(t.Context(), gitremote.CheckoutRequest{Remote: tc.req.Remote, Ref: tc.req.Ref, Commit: tc.req.Commit, Subdir: tc.req.Subdir, Dir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tc.text) || !errors.Is(err, tc.class) {
				t.Fatalf("Checkout = %v, want %q (%v)", err, tc.text, tc.class)
			}
		})
	}
}

// Checkouts of one remote at once share its repository: one fetch, and
// every tree complete.
func TestConcurrentCheckouts(t *testing.T) {
	t.Parallel()
	p := newProject(t)
	c, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		fetches int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := t.TempDir()
			res, err := c.Checkout(t.Context(), gitremote.CheckoutRequest{Remote: p.web.URL + "repo.git", Ref: "refs/heads/main", Commit: p.second, Dir: dir})
			if err != nil {
				t.Errorf("checkout %d: %v", i, err)
				return
			}
			mu.Lock()
			for _, f := range res.Fetches {
				if strings.HasSuffix(f.Remote, "/repo.git") {
					fetches++
				}
			}
			mu.Unlock()
			if _, err := os.Stat(filepath.Join(dir, "mod/vendor/deep/deep.txt")); err != nil {
				t.Errorf("checkout %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if fetches != 1 {
		t.Errorf("%d checkouts fetched the remote %d times, want once", n, fetches)
	}
}
