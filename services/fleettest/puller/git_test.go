package puller_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// gitFixtureDir is testdata/sources/git of the repository: the BuildKit
// fixture repository and the keys BuildKit computed for it.
var gitFixtureDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "sources", "git")
}()

// gitExpected is testdata/sources/git/expected.json.
type gitExpected struct {
	Commits map[string]string `json:"commits"`
	Sources []struct {
		Name     string            `json:"name"`
		Fragment string            `json:"fragment"`
		Attrs    map[string]string `json:"attrs"`
		Key      string            `json:"key"`
		Record   digest.Digest     `json:"record"`
	} `json:"sources"`
}

func loadGitExpected(t *testing.T) gitExpected {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(gitFixtureDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e gitExpected
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// buildkitRoots are the digests of the root records (no inputs) of the
// cache config BuildKit exported.
func buildkitRoots(t *testing.T) map[digest.Digest]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(gitFixtureDir, "buildkit-cacheconfig.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Records []struct {
			Digest digest.Digest     `json:"digest"`
			Inputs [][]struct{ any } `json:"inputs"`
		} `json:"records"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	roots := map[digest.Digest]bool{}
	for _, r := range cfg.Records {
		if len(r.Inputs) == 0 {
			roots[r.Digest] = true
		}
	}
	return roots
}

// serveFixture serves the fixture repository as repo.git with git daemon
// and with git http-backend.
func serveFixture(t *testing.T) (*gitremotetest.Daemon, *gitremotetest.HTTP) {
	t.Helper()
	root := gitremotetest.NewRoot(t)
	root.CloneBundle(t, "repo", filepath.Join(gitFixtureDir, "repo.bundle"))
	return gitremotetest.ServeDaemon(t, root), gitremotetest.ServeHTTP(t, root)
}

// gitSource is what BuildKit's LLB makes of a remote URL base+"repo.git"
// and a fragment: the identifier "git://<host>/<path>#<fragment>" and, for
// a transport other than https, the URL in git.fullurl.
func gitSource(base, fragment string, attrs map[string]string) (string, map[string]string) {
	_, hostPath, _ := strings.Cut(base, "://")
	out := map[string]string{source.AttrFullRemoteURL: base + "repo.git"}
	for k, v := range attrs {
		out[k] = v
	}
	return "git://" + hostPath + "repo.git#" + fragment, out
}

// Known answers: the four git sources of the BuildKit fixture, resolved
// through the fleet against the fixture repository, get the keys BuildKit
// computed, over git:// and http:// alike (the remote is not in the key),
// and their root records are the ones BuildKit exported.
func TestGitKnownAnswerKeys(t *testing.T) {
	t.Parallel()
	fx := loadGitExpected(t)
	roots := buildkitRoots(t)
	daemon, web := serveFixture(t)
	s := fleettest.New(t)
	s.Puller(t)
	for _, src := range fx.Sources {
		for transport, base := range map[string]string{"git": daemon.URL, "http": web.URL} {
			t.Run(src.Name+"/"+transport, func(t *testing.T) {
				t.Parallel()
				identifier, attrs := gitSource(base, src.Fragment, src.Attrs)
				m := fleettest.Miss(t, s.Resolve(t, identifier, attrs, ""))
				if len(m.Keys) != 1 {
					t.Fatalf("keys = %+v, want one", m.Keys)
				}
				k := m.Keys[0]
				if k.Key != src.Key || k.Index != 0 || !k.Done {
					t.Errorf("key = %+v, want %q, index 0, done", k, src.Key)
				}
				if k.Digest != source.SolverDigest(src.Key) {
					t.Errorf("solver digest %s, want %s", k.Digest, source.SolverDigest(src.Key))
				}
				rec := cachefmt.RecordDigest(k.Digest, 0)
				if rec != src.Record || !roots[rec] {
					t.Errorf("root record %s, want %s (in BuildKit's cache: %v)", rec, src.Record, roots[rec])
				}
				// The pin is what the ref points at: for the annotated tag
				// v2, its tag object, as in BuildKit.
				wantPin := strings.SplitN(src.Key, ".", 2)[0][:40]
				if src.Fragment == "v2" {
					wantPin = fx.Commits["v2_tag_object"]
				}
				if k.Pin != wantPin {
					t.Errorf("pin %s, want %s", k.Pin, wantPin)
				}
			})
		}
	}
}

// Keys that need no listing: a commit SHA, and git.fetchbycommit with the
// commit in git.checksum. The remote is never asked.
func TestGitKeysWithoutListing(t *testing.T) {
	t.Parallel()
	fx := loadGitExpected(t)
	_, web := serveFixture(t)
	s := fleettest.New(t)
	s.Puller(t)
	v1 := fx.Commits["v1"]
	for _, tc := range []struct {
		name, fragment string
		attrs          map[string]string
		key            string
	}{
		{"commit", v1, nil, v1},
		{"commit keepgitdir", v1, map[string]string{source.AttrKeepGitDir: "true"}, v1 + ".git#" + v1},
		{"fetchbycommit", "main", map[string]string{source.AttrGitFetchByCommit: "true", source.AttrGitChecksum: v1, source.AttrKeepGitDir: "true"}, v1 + ".git#refs/heads/main"},
	} {
		identifier, attrs := gitSource(web.URL, tc.fragment, tc.attrs)
		m := fleettest.Miss(t, s.Resolve(t, identifier, attrs, ""))
		if m.Keys[0].Key != tc.key || m.Keys[0].Pin != v1 {
			t.Errorf("%s: key %+v, want %q pinned to %s", tc.name, m.Keys[0], tc.key, v1)
		}
	}
	if n := web.Adverts.Load(); n != 0 {
		t.Errorf("the remote was listed %d times", n)
	}
}

// Concurrent resolves of one remote#ref on two replicas list the remote
// once; a resolve made after that listing lists again (a branch may have
// moved).
func TestGitListsOnceAcrossTheFleet(t *testing.T) {
	t.Parallel()
	fx := loadGitExpected(t)
	_, web := serveFixture(t)
	s := fleettest.New(t)
	identifier, attrs := gitSource(web.URL, "main", nil)
	const n = 12
	recs := make([]*bustest.Recorder, n)
	for i := range recs {
		recs[i] = s.Resolve(t, identifier, attrs, "")
	}
	// Every request is waiting for a puller: all were made before any
	// listing starts.
	for _, rec := range recs {
		rec.Wait(t, 10*time.Second, events.TypeCacheKeyRequested)
	}
	s.Puller(t)
	s.Puller(t)
	var wg sync.WaitGroup
	for _, rec := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m := fleettest.Miss(t, rec); m.Keys[0].Key != fx.Commits["main"] {
				t.Errorf("key %s", m.Keys[0].Key)
			}
		}()
	}
	wg.Wait()
	if got := web.Adverts.Load(); got != 1 {
		t.Errorf("%d resolves listed the remote %d times, want once", n, got)
	}
	fleettest.Miss(t, s.Resolve(t, identifier, attrs, ""))
	if got := web.Adverts.Load(); got != 2 {
		t.Errorf("a later resolve made %d listings in all, want 2", got)
	}
	s.ConsumerIdle(t, events.ConsumerPuller)
}

// Bad git sources end with a clear source.failed: permanent ones at once,
// with BuildKit's text where BuildKit has one; an unreachable remote after
// the retries.
func TestGitBadInput(t *testing.T) {
	t.Parallel()
	fx := loadGitExpected(t)
	daemon, _ := serveFixture(t)
	s := fleettest.New(t)
	s.Puller(t)
	src := func(fragment string, kv ...string) (string, map[string]string) {
		attrs := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			attrs[kv[i]] = kv[i+1]
		}
		return gitSource(daemon.URL, fragment, attrs)
	}
	type source2 struct {
		identifier string
		attrs      map[string]string
	}
	op := func(identifier string, attrs map[string]string) source2 { return source2{identifier, attrs} }
	for _, tc := range []struct {
		name         string
		src          source2
		reason, code string
		attempts     int
	}{
		{"unknown ref", op(src("nope")), `repository does not contain ref nope, output: ""`, "not-found", 1},
		{"no such repository", op("git://127.0.0.1/nope.git#v1", map[string]string{source.AttrFullRemoteURL: daemon.URL + "nope.git"}),
			"failed to fetch remote " + daemon.URL + "nope.git: repository not found", "not-found", 1},
		{"malformed URL", op("git://127.0.0.1:notaport/repo.git#v1", nil), `invalid port ":notaport" after host`, "invalid", 1},
		// LLB puts an ssh URL in git.fullurl; the identifier alone means
		// https, in BuildKit as here.
		{"ssh remote", op("git://example.com/org/repo.git#v1", map[string]string{source.AttrFullRemoteURL: "git@example.com:org/repo.git"}),
			"ssh remotes are not supported yet", "invalid", 1},
		{"credentials", op("git://127.0.0.1/repo.git#v1", map[string]string{source.AttrFullRemoteURL: "https://user:hunter2@127.0.0.1/repo.git"}),
			"git.fullurl carries credentials; give them as a client secret", "invalid", 1}, // the resolver refuses it first
		{"checksum not hex", op(src("v1", source.AttrGitChecksum, "nothex")), "invalid checksum nothex for Git URL, expected hex commit hash", "invalid", 1},
		{"checksum mismatch", op(src("v1", source.AttrGitChecksum, "abcdef")), "expected checksum to match abcdef, got " + fx.Commits["v1"], "invalid", 1},
		{"ssh agent", op(src("v1", source.AttrMountSSHSock, "default")), `no SSH key "default" forwarded from the client`, "invalid", 1},
		{"signatures", op(src("v1", source.AttrGitSignaturePubKey, "key")), "git signature verification (git.sig.*) is not supported yet", "invalid", 1},
		{"nothing listening", op("git://127.0.0.1:1/repo.git#v1", map[string]string{source.AttrFullRemoteURL: "git://127.0.0.1:1/repo.git"}),
			"failed to fetch remote git://127.0.0.1:1/repo.git", "unreachable", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fleettest.Failure(t, s.Resolve(t, tc.src.identifier, tc.src.attrs, ""))
			if !strings.Contains(f.Reason, tc.reason) || f.Code != tc.code || f.Attempts != tc.attempts {
				t.Errorf("failed with %q (%s, %d attempts), want %q (%s, %d)", f.Reason, f.Code, f.Attempts, tc.reason, tc.code, tc.attempts)
			}
			if strings.Contains(f.Reason, "hunter2") {
				t.Errorf("reason %q shows the password", f.Reason)
			}
		})
	}
}
