package conformance

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/diff/apply"
	ctdmetadata "github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"github.com/moby/buildkit/cache"
	"github.com/moby/buildkit/cache/metadata"
	"github.com/moby/buildkit/snapshot"
	containerdsnapshot "github.com/moby/buildkit/snapshot/containerd"
	"github.com/moby/buildkit/solver/pb"
	bkhttp "github.com/moby/buildkit/source/http"
	"github.com/moby/buildkit/util/leaseutil"
	"github.com/moby/buildkit/util/winlayers"
	bolt "go.etcd.io/bbolt"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// buildkitCacheManager is the cache manager BuildKit's own http source
// tests make (newCacheManager in source/http/source_test.go of v0.34.1):
// the native snapshotter, a local content store and containerd metadata
// in the "buildkit" namespace. BuildKit's http source downloads into it
// to learn a file's checksum and Last-Modified.
func buildkitCacheManager(t *testing.T) cache.Manager {
	t.Helper()
	dir := t.TempDir()
	sn, err := native.NewSnapshotter(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sn.Close() })
	store, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "containerdmeta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	mdb := ctdmetadata.NewDB(db, store, map[string]snapshots.Snapshotter{"native": sn})
	md, err := metadata.NewStore(filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = md.Close() })
	c := mdb.ContentStore()
	cm, err := cache.NewManager(cache.ManagerOpt{
		Snapshotter:    snapshot.FromContainerdSnapshotter("native", containerdsnapshot.NSSnapshotter("buildkit", mdb.Snapshotter("native")), nil),
		MetadataStore:  md,
		LeaseManager:   leaseutil.WithNamespace(ctdmetadata.NewLeaseManager(mdb), "buildkit"),
		ContentStore:   c,
		Applier:        winlayers.NewFileSystemApplierWithWindows(c, apply.NewFileSystemApplier(c)),
		Differ:         winlayers.NewWalkingDiffWithWindows(c, walking.NewWalkingDiff(c)),
		GarbageCollect: mdb.GarbageCollect,
		Root:           dir,
		MountPoolRoot:  filepath.Join(dir, "cachemounts"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cm.Close() })
	return cm
}

// fixtureHelloKey is the key a real BuildKit computed for hello.txt served
// with Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT
// (testdata/sources/README.md).
const fixtureHelloKey = "sha256:70bb0490362b5bb00f241260e477ab66538b8288dfc51f18967f4994a44d8902"

// httpFile is what the test server answers for one path.
type httpFile struct {
	body    string
	headers map[string]string
}

// Http keys without http.checksum are BuildKit's: BuildKit v0.34.1's http
// source (with BuildKit's own test cache manager, which it downloads
// into) and a fleet's puller resolve the same URLs, with the same
// attributes, against one server: Last-Modified in each of the formats
// net/http reads (and one it cannot), with and without an ETag or a
// Content-Disposition, and with http.authheadersecret; then the keys of a
// second resolve that revalidates with If-None-Match, when the server
// changed Last-Modified but not its ETag (304) and when it changed the
// file (200).
//
// No case sets http.uid or http.gid: BuildKit chowns the file it
// downloads, which needs root, and the owner goes into the key as with
// http.checksum, which TestHTTPChecksumKeysAreBuildKits checks without a
// download.
//
// BuildKit runs with no session: it finds no secret and sends no
// Authorization, and its key names the secret, never its value. The
// fleet's builds carry a session holding the secret, so the puller sends
// it; the server answers either way.
func TestHTTPKeysAreBuildKits(t *testing.T) {
	const lastMod = "Thu, 01 Jan 2026 00:00:00 GMT"
	files := map[string]httpFile{
		"/plain.txt":       {body: "no dates\n"},
		"/hello.txt":       {body: "hello from http\n", headers: map[string]string{"Last-Modified": lastMod}},
		"/etag.txt":        {body: "tagged\n", headers: map[string]string{"Last-Modified": lastMod, "ETag": `"v1"`}},
		"/rfc850.txt":      {body: "rfc 850\n", headers: map[string]string{"Last-Modified": "Thursday, 01-Jan-26 00:00:00 GMT"}},
		"/ansic.txt":       {body: "asctime\n", headers: map[string]string{"Last-Modified": "Thu Jan  1 00:00:00 2026"}},
		"/bad-date.txt":    {body: "bad date\n", headers: map[string]string{"Last-Modified": "yesterday"}},
		"/disposition":     {body: "named\n", headers: map[string]string{"Last-Modified": lastMod, "Content-Disposition": `attachment; filename="named.txt"`}},
		"/secret.txt":      {body: "private\n", headers: map[string]string{"Last-Modified": lastMod}},
		"/secret-plain":    {body: "private, no date\n"},
		"/secret-attrs.gz": {body: "private with attrs\n", headers: map[string]string{"Last-Modified": lastMod, "ETag": `W/"w"`}},
	}
	var (
		mu   sync.Mutex
		auth = map[string][]string{}
		// notModified counts the 304 answers by path.
		notModified = map[string]int{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		auth[r.URL.Path] = append(auth[r.URL.Path], r.Header.Get("Authorization"))
		for k, v := range f.headers {
			w.Header().Set(k, v)
		}
		if etag := strings.TrimPrefix(f.headers["ETag"], "W/"); etag != "" {
			for _, tag := range strings.Split(r.Header.Get("If-None-Match"), ",") {
				if strings.TrimPrefix(strings.TrimSpace(tag), "W/") == etag {
					notModified[r.URL.Path]++
					w.WriteHeader(http.StatusNotModified)
					return
				}
			}
		}
		_, _ = w.Write([]byte(f.body))
	}))
	t.Cleanup(srv.Close)

	bk, err := bkhttp.NewSource(bkhttp.Opt{CacheAccessor: buildkitCacheManager(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := fleettest.New(t)
	s.Puller(t)
	const secretName, secretValue = "WEB_AUTH", "Bearer conformance-token"
	sess := s.ServeSecrets(t, secret.Map{secretName: []byte(secretValue)})

	secret := map[string]string{pb.AttrHTTPAuthHeaderSecret: secretName}
	keys := map[string]string{}
	// compare resolves path with attrs with BuildKit and with the fleet,
	// fails unless they agree, and returns BuildKit's key.
	compare := func(t *testing.T, path string, attrs map[string]string) string {
		t.Helper()
		url := srv.URL + path
		scheme, rest, _ := strings.Cut(url, "://")
		want := buildkitKey(t, bk, scheme, rest, attrs)
		rec, _ := s.Submit(t, events.SourceResolveRequested{Source: events.SourceOp{Identifier: url, Attrs: attrs}, Session: sess})
		m := fleettest.Miss(t, rec)
		if len(m.Keys) != 1 {
			t.Fatalf("keys %+v, want one", m.Keys)
		}
		got := m.Keys[0]
		if got.Key != want.key || got.Pin != want.pin || !want.done {
			t.Errorf("key %s pin %s, BuildKit's %s pin %s (done %v)", got.Key, got.Pin, want.key, want.pin, want.done)
		}
		if got.Digest != solverDigest(want.key) {
			t.Errorf("solver digest %s, want sha256 of the key with BuildKit's prefix", got.Digest)
		}
		return want.key
	}
	for _, tc := range []struct {
		name, path string
		attrs      map[string]string
	}{
		{name: "no Last-Modified", path: "/plain.txt"},
		{name: "Last-Modified", path: "/hello.txt"},
		{name: "Last-Modified and ETag", path: "/etag.txt"},
		{name: "Last-Modified in RFC 850", path: "/rfc850.txt"},
		{name: "Last-Modified in asctime", path: "/ansic.txt"},
		{name: "Last-Modified unreadable", path: "/bad-date.txt"},
		{name: "Content-Disposition", path: "/disposition"},
		{name: "Last-Modified and file attrs", path: "/hello.txt", attrs: map[string]string{pb.AttrHTTPFilename: "f.bin", pb.AttrHTTPPerm: "0755"}},
		{name: "no auth header secret", path: "/secret.txt"},
		{name: "auth header secret", path: "/secret.txt", attrs: secret},
		{name: "auth header secret, no Last-Modified", path: "/secret-plain", attrs: secret},
		{name: "auth header secret, headers and file attrs", path: "/secret-attrs.gz", attrs: merge(secret, map[string]string{
			pb.AttrHTTPFilename: "x.gz", pb.AttrHTTPPerm: "0644",
			pb.AttrHTTPHeaderPrefix + "accept": "application/gzip", pb.AttrHTTPHeaderPrefix + "user-agent": "ua",
		})},
	} {
		t.Run(tc.name, func(t *testing.T) { keys[tc.name] = compare(t, tc.path, tc.attrs) })
	}

	// Revalidation: what BuildKit and the fleet learnt of a URL with an
	// ETag is asked again with If-None-Match after the server changed its
	// Last-Modified and kept its ETag (answered 304), or changed both and
	// the content (answered 200).
	mu.Lock()
	files["/revalidate.txt"] = httpFile{body: "same\n", headers: map[string]string{"Last-Modified": lastMod, "ETag": `"r1"`}}
	files["/changed.txt"] = httpFile{body: "first\n", headers: map[string]string{"Last-Modified": lastMod, "ETag": `W/"c1"`}}
	mu.Unlock()
	for _, path := range []string{"/revalidate.txt", "/changed.txt"} {
		t.Run("first resolve of "+path, func(t *testing.T) { keys[path] = compare(t, path, nil) })
	}
	const later = "Fri, 02 Jan 2026 00:00:00 GMT"
	mu.Lock()
	files["/revalidate.txt"].headers["Last-Modified"] = later
	files["/changed.txt"] = httpFile{body: "second\n", headers: map[string]string{"Last-Modified": later, "ETag": `W/"c2"`}}
	mu.Unlock()
	for _, path := range []string{"/revalidate.txt", "/changed.txt"} {
		t.Run("revalidation of "+path, func(t *testing.T) { keys["again "+path] = compare(t, path, nil) })
	}
	mu.Lock()
	if n := notModified["/revalidate.txt"]; n < 2 {
		t.Errorf("/revalidate.txt was answered 304 %d times, want at least 2 (BuildKit's and the fleet's revalidation)", n)
	}
	if n := notModified["/changed.txt"]; n != 0 {
		t.Errorf("/changed.txt was answered 304 %d times, want none", n)
	}
	mu.Unlock()
	if keys["/changed.txt"] == keys["again /changed.txt"] {
		t.Errorf("a changed file kept its key %s", keys["/changed.txt"])
	}

	// The premises: BuildKit's code gives the key a real BuildKit computed
	// for the same file (testdata/sources/README.md), and keys the secret's
	// name; the fleet sent the secret and BuildKit, with no session, did
	// not.
	if got := keys["Last-Modified"]; got != fixtureHelloKey {
		t.Errorf("BuildKit's code keys hello.txt %s, a real BuildKit %s", got, fixtureHelloKey)
	}
	if keys["auth header secret"] == keys["no auth header secret"] {
		t.Errorf("BuildKit's key ignores http.authheadersecret: the secret cases check nothing")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, path := range []string{"/secret.txt", "/secret-plain", "/secret-attrs.gz"} {
		if got := auth[path]; !slices.Contains(got, secretValue) || !slices.Contains(got, "") {
			t.Errorf("%s: Authorization headers %q, want the secret from the fleet and none from BuildKit", path, got)
		}
	}
}
