package puller_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// The fixture a real BuildKit made: hello.txt served with this
// Last-Modified and no ETag (testdata/sources/README.md).
const (
	sourcesDir        = "../../../testdata/sources"
	helloLastModified = "Thu, 01 Jan 2026 00:00:00 GMT"
	helloDigest       = "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e"
)

func helloContent(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sourcesDir, "www", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fileServer is a static file server for one path, /hello.txt, made with
// http.ServeContent (Last-Modified, HEAD, If-None-Match), that counts
// requests by method.
type fileServer struct {
	*httptest.Server
	etags bool

	mu      sync.Mutex
	content []byte
	modTime time.Time
	// failures is how many more GETs get failStatus.
	failures   int
	failStatus int
	delay      time.Duration
	requests   map[string]int
	// conditional counts requests that carried If-None-Match.
	conditional int
}

// newFileServer serves content as /hello.txt with the fixture's
// Last-Modified; with etags it sends an ETag derived from the content.
func newFileServer(t *testing.T, content []byte, etags bool) *fileServer {
	t.Helper()
	mod, err := http.ParseTime(helloLastModified)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fileServer{etags: etags, content: content, modTime: mod, requests: map[string]int{}}
	fs.Server = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) serve(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	fs.requests[r.Method]++
	if r.Header.Get("If-None-Match") != "" {
		fs.conditional++
	}
	content, mod, delay := fs.content, fs.modTime, fs.delay
	fail := 0
	if r.Method == http.MethodGet && fs.failures > 0 {
		fs.failures--
		fail = fs.failStatus
	}
	fs.mu.Unlock()
	time.Sleep(delay)
	if fail != 0 {
		http.Error(w, "failing on purpose", fail)
		return
	}
	if r.URL.Path != "/hello.txt" {
		http.NotFound(w, r)
		return
	}
	if fs.etags {
		w.Header().Set("ETag", `"`+digest.FromBytes(content).Encoded()[:16]+`"`)
	}
	http.ServeContent(w, r, "hello.txt", mod, bytes.NewReader(content))
}

// count is how many requests of method the server got.
func (fs *fileServer) count(method string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.requests[method]
}

func (fs *fileServer) total() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, c := range fs.requests {
		n += c
	}
	return n
}

// counts is a copy of the request counts, with "conditional" for those
// that carried If-None-Match.
func (fs *fileServer) counts() map[string]int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := map[string]int{"conditional": fs.conditional}
	for m, c := range fs.requests {
		out[m] = c
	}
	return out
}

func (fs *fileServer) slow(d time.Duration) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.delay = d
}

func (fs *fileServer) set(content []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.content = content
}

func (fs *fileServer) fail(status, times int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.failStatus, fs.failures = status, times
}

func (fs *fileServer) url() string { return fs.URL + "/hello.txt" }

// Known answers: hello.txt served the way BuildKit's fixture server
// served it gets the keys BuildKit computed, downloaded and with
// http.checksum, and their records are the roots BuildKit exported. The
// checksum needs no request at all.
func TestHTTPKnownAnswerKeys(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	srv := newFileServer(t, helloContent(t), false)
	for _, tc := range []struct {
		name     string
		attrs    map[string]string
		key      string
		record   string
		requests int
	}{
		{"downloaded", nil,
			"sha256:70bb0490362b5bb00f241260e477ab66538b8288dfc51f18967f4994a44d8902",
			"sha256:82f754d18ddd9ff4ea4128f68742c65db20c02c94259785b54ae7bb9fc45633b", 1},
		{"checksum", map[string]string{source.AttrHTTPChecksum: helloDigest},
			"sha256:007c06dafa56f5c11333e646c276e7ccf5499d40eae450336045a1d17245ce04",
			"sha256:52c481cf3646b21aadcffc8e4fc83841574b39f77054d9354127554a2b654bc7", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.total()
			m := fleettest.Miss(t, s.Resolve(t, srv.url(), tc.attrs, ""))
			if len(m.Keys) != 1 {
				t.Fatalf("keys %v", keysOf(m))
			}
			k := m.Keys[0]
			if k.Key != tc.key || k.Index != 0 || !k.Done || k.Pin != helloDigest {
				t.Errorf("key %+v, want %s, index 0, done, pinned to %s", k, tc.key, helloDigest)
			}
			if got := cachefmt.RecordDigest(k.Digest, 0).String(); got != tc.record {
				t.Errorf("record digest %s, want BuildKit's %s", got, tc.record)
			}
			if got := srv.total() - before; got != tc.requests {
				t.Errorf("%d requests to the server, want %d", got, tc.requests)
			}
		})
	}
}

// Revalidation with ETags: the first resolve downloads; the next ones
// send a conditional HEAD and download nothing while the ETag stands; a
// changed file is downloaded again and gets a new key.
func TestHTTPRevalidatesWithETags(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	srv := newFileServer(t, helloContent(t), true)

	first := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, ""))
	if srv.count(http.MethodGet) != 1 || srv.count(http.MethodHead) != 0 {
		t.Fatalf("first resolve: %v, want one GET", srv.counts())
	}
	for i := range 2 {
		again := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, ""))
		if again.Keys[0] != first.Keys[0] {
			t.Errorf("resolve %d: key %+v, want %+v", i+2, again.Keys[0], first.Keys[0])
		}
	}
	if got := srv.count(http.MethodGet); got != 1 {
		t.Errorf("%d GETs after three resolves of an unchanged file, want 1", got)
	}
	if got := srv.count(http.MethodHead); got != 2 {
		t.Errorf("%d HEADs, want 2 (one revalidation per later resolve)", got)
	}

	changed := []byte("hello again from http\n")
	srv.set(changed)
	m := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, ""))
	if m.Keys[0].Key == first.Keys[0].Key || m.Keys[0].Pin != digest.FromBytes(changed).String() {
		t.Errorf("changed file: key %+v", m.Keys[0])
	}
	if got := srv.count(http.MethodGet); got != 2 {
		t.Errorf("%d GETs after the change, want 2", got)
	}
	// And the old ETag is still known: going back costs no download.
	srv.set(helloContent(t))
	back := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, ""))
	if back.Keys[0] != first.Keys[0] || srv.count(http.MethodGet) != 2 {
		t.Errorf("back to the first file: key %+v after %d GETs", back.Keys[0], srv.count(http.MethodGet))
	}
}

// Two replicas share what the URL served: a replica that never saw the
// URL revalidates what another downloaded instead of downloading it.
func TestHTTPETagsAreSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	first := s.Puller(t)
	srv := newFileServer(t, helloContent(t), true)
	m := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, ""))
	first.Stop()

	s.Puller(t)
	again := fleettest.Miss(t, s.Resolve(t, srv.url(), nil, ""))
	if again.Keys[0] != m.Keys[0] {
		t.Errorf("second replica: key %+v, want %+v", again.Keys[0], m.Keys[0])
	}
	if c := srv.counts(); c[http.MethodGet] != 1 || c[http.MethodHead] != 1 || c["conditional"] != 1 {
		t.Errorf("requests %v, want one GET by the first replica and one conditional HEAD by the second", c)
	}
	kv, err := s.Env.JS.KeyValue(t.Context(), events.BucketHTTP)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "http.") {
			t.Errorf("unexpected key %s in %s", k, events.BucketHTTP)
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d keys in %s, want 1", n, events.BucketHTTP)
	}
}

// Concurrent resolves of one URL on two replicas download it once.
func TestHTTPConcurrentResolvesDownloadOnce(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Puller(t)
	srv := newFileServer(t, helloContent(t), true)
	srv.slow(50 * time.Millisecond)
	const n = 20
	recs := make([]*bustest.Recorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { recs[i] = s.Resolve(t, srv.url(), nil, "") })
	}
	wg.Wait()
	var key string
	for _, rec := range recs {
		m := fleettest.Miss(t, rec)
		if key == "" {
			key = m.Keys[0].Key
		}
		if m.Keys[0].Key != key {
			t.Errorf("keys differ: %s and %s", key, m.Keys[0].Key)
		}
	}
	if got := srv.count(http.MethodGet); got != 1 {
		t.Errorf("%d GETs for %d concurrent resolves, want 1 (%v)", got, n, srv.counts())
	}
	t.Logf("requests for %d resolves: %v", n, srv.counts())
}

// A pull: the snapshot holds hello.txt with mode 0600 (BuildKit's
// default), the fixture's Last-Modified as mtime, and its bytes; the
// snapshotter downloaded it again (the puller only hashed it). A second
// pull revalidates and hits without downloading.
func TestHTTPPull(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	content := helloContent(t)
	srv := newFileServer(t, content, true)
	uid, gid := owner()
	attrs := map[string]string{source.AttrHTTPUID: fmt.Sprint(uid), source.AttrHTTPGID: fmt.Sprint(gid), "http.header.user-agent": "stevedore-test"}

	rec, _ := s.Request(t, srv.url(), attrs, "", true)
	ready := fleettest.Ready(t, rec)
	reqs := rec.OfType(events.TypeSnapshotRequested)
	if len(reqs) != 1 {
		t.Fatalf("%d snapshot.requested", len(reqs))
	}
	mod, _ := http.ParseTime(helloLastModified)
	want := events.FileContent{Name: "hello.txt", Perm: 0o600, UID: int64(uid), GID: int64(gid), ModTime: &mod,
		Digest: helloDigest, Size: int64(len(content)), URL: srv.url(),
		Headers: []events.Header{{Name: "User-Agent", Value: "stevedore-test"}}}
	got := reqs[0].Data.(events.SnapshotRequested).Content
	if got == nil || got.File == nil || got.File.ModTime == nil || !got.File.ModTime.Equal(mod) {
		t.Fatalf("content %+v", got)
	}
	gotFile := *got.File
	gotFile.ModTime = want.ModTime
	if fmt.Sprint(gotFile) != fmt.Sprint(want) {
		t.Errorf("file content\n%+v, want\n%+v", gotFile, want)
	}
	fi, data := snapshotFile(t, svc, ready.SnapshotKey, "hello.txt")
	st := fi.Sys().(*syscall.Stat_t)
	if !bytes.Equal(data, content) || fi.Mode() != 0o600 || !fi.ModTime().Equal(mod) || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("file %q mode %v mtime %v owner %d:%d", data, fi.Mode(), fi.ModTime(), st.Uid, st.Gid)
	}
	if got := srv.count(http.MethodGet); got != 2 {
		t.Errorf("%d GETs, want 2 (the puller's hash, the snapshotter's download)", got)
	}

	again, _ := s.Request(t, srv.url(), attrs, "", true)
	hit := fleettest.PullEnd(t, again)
	if h, ok := hit.Data.(events.CacheHit); !ok || h.Record.SnapshotKey != ready.SnapshotKey || h.Snapshot {
		t.Fatalf("second pull ended with %v %+v", bustest.Summary([]events.Event{hit}), hit.Data)
	}
	if got := srv.count(http.MethodGet); got != 2 {
		t.Errorf("the hit made %d more GETs", got-2)
	}
}

// Bad answers end the build with BuildKit's messages: a 404 at once, a
// checksum the content does not have when the snapshot is made; a burst of
// 500s is retried.
func TestHTTPBadInput(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	srv := newFileServer(t, helloContent(t), false)

	t.Run("404", func(t *testing.T) {
		f := fleettest.Failure(t, s.Resolve(t, srv.URL+"/missing.txt", nil, ""))
		if f.Reason != "invalid response status 404" || f.Code != "not-found" || f.Attempts != 1 {
			t.Errorf("failure %+v", f)
		}
	})
	t.Run("checksum mismatch", func(t *testing.T) {
		wrong := "sha256:" + strings.Repeat("0", 64)
		before := srv.total()
		m := fleettest.Miss(t, s.Resolve(t, srv.url(), map[string]string{source.AttrHTTPChecksum: wrong}, ""))
		if m.Keys[0].Pin != wrong || srv.total() != before {
			t.Errorf("key %+v after %d requests; a checksum needs none", m.Keys[0], srv.total()-before)
		}
		rec, _ := s.Request(t, srv.url(), map[string]string{source.AttrHTTPChecksum: wrong}, "", true)
		end := fleettest.PullEnd(t, rec)
		f, ok := end.Data.(events.SnapshotFailed)
		if !ok || !strings.HasPrefix(f.Reason, "digest mismatch for ") || f.Code != "invalid" {
			t.Errorf("pull with a wrong checksum ended with %v %+v", bustest.Summary([]events.Event{end}), end.Data)
		}
		t.Logf("snapshot.failed: %s", f.Reason)
	})
	t.Run("500 burst is retried", func(t *testing.T) {
		srv.fail(http.StatusInternalServerError, 3)
		before := srv.count(http.MethodGet)
		m := fleettest.Miss(t, s.Resolve(t, srv.url()+"?burst", nil, ""))
		if m.Keys[0].Pin != helloDigest {
			t.Errorf("key %+v", m.Keys[0])
		}
		if got := srv.count(http.MethodGet) - before; got != 4 {
			t.Errorf("%d GETs, want 3 failed and 1", got)
		}
	})
	t.Run("persistent 503 gives up", func(t *testing.T) {
		srv.fail(http.StatusServiceUnavailable, 1000)
		defer srv.fail(0, 0)
		f := fleettest.Failure(t, s.Resolve(t, srv.url()+"?down", nil, ""))
		if f.Code != "unavailable" || !strings.Contains(f.Reason, "invalid response status 503") || f.Attempts != 6 {
			t.Errorf("failure %+v", f)
		}
	})
	s.ConsumerIdle(t, events.ConsumerPuller)
}
