package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/buildkit/solver/pb"
	bkgit "github.com/moby/buildkit/source/git"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// The commits of testdata/sources/git/repo.bundle (its README.md).
const (
	gitMain  = "84ce3a5707faf3d46c1cd2c71e2187e37890178b" // main, the second commit
	gitV1    = "ee0144110bb25cd77d9a9f206f9ef475271d7244" // lightweight tag v1, the first commit
	gitV2Tag = "9810617a87f11a979d8ba7ae1c4b749abe93f67c" // annotated tag v2, on main
)

// Git keys are BuildKit's: BuildKit v0.34.1's git source (its Identifier,
// Resolve and CacheKey, which runs git ls-remote against the remote) and
// a fleet's puller resolve the same identifiers against one git daemon.
// The repository is the fixture bundle plus a branch dev, made its
// default branch (HEAD), and a name, both, that is a branch (at main) and
// an annotated tag (at v1).
//
// BuildKit's CacheKey runs with no session manager and no job: without
// signature verification it only lists the remote's refs, which needs
// neither a cache manager nor a session.
func TestGitKeysAreBuildKits(t *testing.T) {
	root := gitremotetest.NewRoot(t)
	root.CloneBundle(t, "repo", filepath.Join("..", "testdata", "sources", "git", "repo.bundle"))
	repo := root.Path("repo")
	gitremotetest.Run(t, repo, nil, "branch", "dev", gitV1)
	gitremotetest.Run(t, repo, nil, "symbolic-ref", "HEAD", "refs/heads/dev")
	gitremotetest.Run(t, repo, nil, "branch", "both", gitMain)
	gitremotetest.Run(t, repo, []string{"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@stevedore.invalid", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z"},
		"tag", "-a", "-m", "both", "both", gitV1)
	daemon := gitremotetest.ServeDaemon(t, root)
	host := strings.TrimSuffix(strings.TrimPrefix(daemon.URL, "git://"), "/")
	// What LLB makes of git://<host>/repo.git: the URL goes in
	// git.fullurl, since the identifier alone means https.
	remote := map[string]string{pb.AttrFullRemoteURL: "git://" + host + "/repo.git"}

	bk, err := bkgit.NewSource(bkgit.Opt{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bkgit.Supported(); err != nil {
		t.Fatal(err)
	}
	s := fleettest.New(t)
	s.Puller(t)

	keep := map[string]string{pb.AttrKeepGitDir: "true"}
	skip := map[string]string{pb.AttrGitSkipSubmodules: "true"}
	mtime := map[string]string{pb.AttrGitMTime: "commit"}
	byCommit := func(commit string) map[string]string {
		return map[string]string{pb.AttrGitFetchByCommit: "true", pb.AttrGitChecksum: commit}
	}
	for _, tc := range []struct {
		name, fragment string
		attrs          []map[string]string
		// key is the key expected from both, as a check that the case
		// exercises what it names.
		key string
	}{
		{name: "annotated tag", fragment: "v2", key: gitMain},
		{name: "annotated tag, keep-git-dir", fragment: "v2", attrs: []map[string]string{keep}, key: gitV2Tag + ".git#refs/tags/v2"},
		{name: "annotated tag by full ref, keep-git-dir", fragment: "refs/tags/v2", attrs: []map[string]string{keep}, key: gitV2Tag + ".git#refs/tags/v2"},
		{name: "lightweight tag, keep-git-dir", fragment: "v1", attrs: []map[string]string{keep}, key: gitV1 + ".git#refs/tags/v1"},
		{name: "default branch", fragment: "", key: gitV1},
		{name: "default branch, keep-git-dir", fragment: "", attrs: []map[string]string{keep}, key: gitV1 + ".git#refs/heads/dev"},
		{name: "branch and tag of one name", fragment: "both", attrs: []map[string]string{keep}, key: gitMain + ".git#refs/heads/both"},
		{name: "skip-submodules", fragment: "main", attrs: []map[string]string{skip}, key: gitMain + "(skip-submodules)"},
		{name: "mtime=commit", fragment: "main", attrs: []map[string]string{mtime}, key: gitMain + "(mtime=commit)"},
		{name: "mtime=checkout", fragment: "main", attrs: []map[string]string{{pb.AttrGitMTime: "checkout"}}, key: gitMain},
		{name: "subdir", fragment: "v2:sub", key: gitMain + ":sub"},
		{name: "every suffix", fragment: "v2:sub", attrs: []map[string]string{keep, skip, mtime},
			key: gitV2Tag + ".git#refs/tags/v2:sub(skip-submodules)(mtime=commit)"},
		{name: "partial ref", fragment: "heads/main", attrs: []map[string]string{keep}, key: gitMain + ".git#refs/heads/main"},
		{name: "checksum prefix", fragment: "v1", attrs: []map[string]string{{pb.AttrGitChecksum: gitV1[:7]}}, key: gitV1},
		{name: "checksum of an annotated tag's object", fragment: "v2", attrs: []map[string]string{{pb.AttrGitChecksum: gitV2Tag}}, key: gitMain},
		{name: "checksum of an annotated tag's commit, keep-git-dir", fragment: "v2", attrs: []map[string]string{{pb.AttrGitChecksum: gitMain}, keep},
			key: gitV2Tag + ".git#refs/tags/v2"},
		{name: "lightweight tag, subdir, keep-git-dir", fragment: "v1:sub", attrs: []map[string]string{keep}, key: gitV1 + ".git#refs/tags/v1:sub"},
		{name: "commit sha", fragment: gitV1, key: gitV1},
		{name: "commit sha, mtime=commit", fragment: gitV1, attrs: []map[string]string{mtime, skip}, key: gitV1 + "(skip-submodules)(mtime=commit)"},
		{name: "commit sha, keep-git-dir, subdir", fragment: gitMain + ":sub", attrs: []map[string]string{keep, skip},
			key: gitMain + ".git#" + gitMain + ":sub(skip-submodules)"},
		{name: "fetch by commit", fragment: "main", attrs: []map[string]string{byCommit(gitMain)}, key: gitMain},
		{name: "fetch by commit, keep-git-dir", fragment: "main", attrs: []map[string]string{byCommit(gitMain), keep}, key: gitMain + ".git#refs/heads/main"},
		{name: "fetch by commit of a tag, keep-git-dir", fragment: "refs/tags/v1", attrs: []map[string]string{byCommit(gitV1), keep}, key: gitV1 + ".git#refs/tags/v1"},
		{name: "fetch by commit, no ref, keep-git-dir", fragment: "", attrs: []map[string]string{byCommit(gitV1), keep, mtime}, key: gitV1 + ".git#" + gitV1 + "(mtime=commit)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := merge(append([]map[string]string{remote}, tc.attrs...)...)
			ref := host + "/repo.git"
			if tc.fragment != "" {
				ref += "#" + tc.fragment
			}
			want := buildkitKey(t, bk, "git", ref, attrs)
			if want.key != tc.key {
				t.Fatalf("BuildKit's key is %q, the case expects %q", want.key, tc.key)
			}
			m := fleettest.Miss(t, s.Resolve(t, "git://"+ref, attrs, ""))
			if len(m.Keys) != 1 {
				t.Fatalf("keys %+v, want one", m.Keys)
			}
			got := m.Keys[0]
			if got.Key != want.key || got.Pin != want.pin || !want.done {
				t.Errorf("key %q pin %s, BuildKit's %q pin %s (done %v)", got.Key, got.Pin, want.key, want.pin, want.done)
			}
			if got.Digest != solverDigest(want.key) {
				t.Errorf("solver digest %s, want sha256 of the key with BuildKit's prefix", got.Digest)
			}
		})
	}
}

// merge is the union of attribute maps.
func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// solverDigest is the digest BuildKit's solver gives a source key.
func solverDigest(key string) digest.Digest {
	return digest.FromString("buildkit.source.v0:" + key)
}

// The keys of a SHA-256 repository (64-digit object names) are BuildKit's
// when no listing of its refs is needed: a commit named by the identifier
// or fetched by commit. The puller cannot list the refs of a SHA-256
// repository (go-git v5 reads only SHA-1 advertisements), so a branch, a
// tag or the default branch of one fails where BuildKit, which runs git,
// has a key; those are not checked here.
func TestGitSHA256KeysAreBuildKits(t *testing.T) {
	root := gitremotetest.NewRoot(t)
	work := t.TempDir()
	gitremotetest.Run(t, work, nil, "init", "--quiet", "--object-format=sha256", "--initial-branch=main")
	if err := os.WriteFile(filepath.Join(work, "README"), []byte("sha256\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	at := []string{"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z"}
	gitremotetest.Run(t, work, at, "add", "README")
	gitremotetest.Run(t, work, at, "commit", "--quiet", "-m", "one")
	commit := gitremotetest.Run(t, work, nil, "rev-parse", "HEAD")
	if len(commit) != 64 {
		t.Fatalf("commit %q is no SHA-256 name", commit)
	}
	gitremotetest.Run(t, root.Dir, nil, "clone", "--quiet", "--bare", work, root.Path("sha"))
	daemon := gitremotetest.ServeDaemon(t, root)
	host := strings.TrimSuffix(strings.TrimPrefix(daemon.URL, "git://"), "/")
	remote := map[string]string{pb.AttrFullRemoteURL: "git://" + host + "/sha.git"}

	bk, err := bkgit.NewSource(bkgit.Opt{})
	if err != nil {
		t.Fatal(err)
	}
	s := fleettest.New(t)
	s.Puller(t)
	for _, tc := range []struct {
		name, fragment string
		attrs          map[string]string
	}{
		{name: "commit", fragment: commit},
		{name: "commit, keep-git-dir, mtime=commit", fragment: commit, attrs: map[string]string{pb.AttrKeepGitDir: "true", pb.AttrGitMTime: "commit"}},
		{name: "fetch by commit, keep-git-dir", fragment: "main", attrs: map[string]string{pb.AttrGitFetchByCommit: "true", pb.AttrGitChecksum: commit, pb.AttrKeepGitDir: "true"}},
		{name: "fetch by commit, no ref", fragment: "", attrs: map[string]string{pb.AttrGitFetchByCommit: "true", pb.AttrGitChecksum: commit, pb.AttrKeepGitDir: "true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := merge(remote, tc.attrs)
			ref := host + "/sha.git"
			if tc.fragment != "" {
				ref += "#" + tc.fragment
			}
			want := buildkitKey(t, bk, "git", ref, attrs)
			m := fleettest.Miss(t, s.Resolve(t, "git://"+ref, attrs, ""))
			if len(m.Keys) != 1 {
				t.Fatalf("keys %+v, want one", m.Keys)
			}
			if got := m.Keys[0]; got.Key != want.key || got.Pin != want.pin {
				t.Errorf("key %q pin %s, BuildKit's %q pin %s", got.Key, got.Pin, want.key, want.pin)
			}
		})
	}
}
