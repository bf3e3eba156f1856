package registrytest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/go-containerregistry/pkg/authn"
	gcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// imagesDir holds the fixture layouts and expected.json (see its README).
const imagesDir = "../../../testdata/images"

type expectedPlatform struct {
	Manifest          digest.Digest   `json:"manifest"`
	ManifestMediaType string          `json:"manifest_media_type"`
	Config            digest.Digest   `json:"config"`
	ConfigMediaType   string          `json:"config_media_type"`
	Layers            []digest.Digest `json:"layers"`
	LayerMediaTypes   []string        `json:"layer_media_types"`
}

type expectedImage struct {
	Path      string                      `json:"path"`
	RefName   string                      `json:"ref_name"`
	MediaType string                      `json:"media_type"`
	Digest    digest.Digest               `json:"digest"`
	Size      int64                       `json:"size"`
	Reject    string                      `json:"reject"`
	Platforms map[string]expectedPlatform `json:"platforms"`
}

func loadExpected(t *testing.T) map[string]expectedImage {
	t.Helper()
	dt, err := os.ReadFile(filepath.Join(imagesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Images map[string]expectedImage `json:"images"`
	}
	if err := json.Unmarshal(dt, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Images) == 0 {
		t.Fatal("expected.json lists no images")
	}
	return doc.Images
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// send makes one request to the registry as code under test would.
func send(t *testing.T, reg *registrytest.Registry, method, path string, body []byte, edit func(*http.Request)) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, reg.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	dt, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: dt}
}

func get(t *testing.T, reg *registrytest.Registry, path string) response {
	t.Helper()
	return send(t, reg, http.MethodGet, path, nil, nil)
}

// checkContent checks that a GET answered 200 with exactly the content of
// want.
func checkContent(t *testing.T, what string, r response, want digest.Digest) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status %d: %s", what, r.status, r.body)
	}
	if got := digest.FromBytes(r.body); got != want {
		t.Errorf("%s: body digest %s, want %s", what, got, want)
	}
}

func TestPushLayoutPreservesDigests(t *testing.T) {
	t.Parallel()
	for name, img := range loadExpected(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			repo := "fixture/" + name
			desc := reg.PushLayout(t, filepath.Join(imagesDir, img.Path), repo+":1")
			if desc.Digest != img.Digest || desc.MediaType != img.MediaType || desc.Size != img.Size {
				t.Errorf("PushLayout returned %+v, want %s %s %d", desc, img.MediaType, img.Digest, img.Size)
			}
			if n := len(reg.Requests()); n != 0 {
				t.Errorf("pushing recorded %d requests, want none: %+v", n, reg.Requests())
			}

			r := get(t, reg, "/v2/"+repo+"/manifests/1")
			checkContent(t, "manifest by tag", r, img.Digest)
			if got := r.header.Get("Docker-Content-Digest"); got != img.Digest.String() {
				t.Errorf("Docker-Content-Digest %q, want %s", got, img.Digest)
			}
			if got := r.header.Get("Content-Type"); got != img.MediaType {
				t.Errorf("Content-Type %q, want %s", got, img.MediaType)
			}
			checkContent(t, "manifest by digest", get(t, reg, "/v2/"+repo+"/manifests/"+img.Digest.String()), img.Digest)

			for plat, p := range img.Platforms {
				r := get(t, reg, "/v2/"+repo+"/manifests/"+p.Manifest.String())
				checkContent(t, plat+" manifest", r, p.Manifest)
				if got := r.header.Get("Content-Type"); got != p.ManifestMediaType {
					t.Errorf("%s manifest Content-Type %q, want %s", plat, got, p.ManifestMediaType)
				}
				checkContent(t, plat+" config", get(t, reg, "/v2/"+repo+"/blobs/"+p.Config.String()), p.Config)
				for i, l := range p.Layers {
					checkContent(t, fmt.Sprintf("%s layer %d", plat, i), get(t, reg, "/v2/"+repo+"/blobs/"+l.String()), l)
				}
			}
			if img.Reject == "" && len(img.Platforms) == 0 {
				t.Errorf("expected.json lists no platforms for %s", name)
			}
		})
	}
}

func TestPushLayoutRefAndDigestReference(t *testing.T) {
	t.Parallel()
	images := loadExpected(t)
	reg := registrytest.New(t)

	base := images["buildkit-base"]
	desc := reg.PushLayoutRef(t, filepath.Join(imagesDir, base.Path), base.RefName, "fixture/base:1")
	if desc.Digest != base.Digest {
		t.Errorf("PushLayoutRef digest %s, want %s", desc.Digest, base.Digest)
	}
	checkContent(t, "base by tag", get(t, reg, "/v2/fixture/base/manifests/1"), base.Digest)

	// A digest reference pushes without a tag.
	multi := images["multi"]
	reg.PushLayout(t, filepath.Join(imagesDir, multi.Path), "fixture/multi@"+multi.Digest.String())
	checkContent(t, "multi by digest", get(t, reg, "/v2/fixture/multi/manifests/"+multi.Digest.String()), multi.Digest)
	if r := get(t, reg, "/v2/fixture/multi/manifests/latest"); r.status != http.StatusNotFound {
		t.Errorf("multi:latest status %d, want 404", r.status)
	}

	// No repository tag means latest.
	single := images["single"]
	reg.PushLayout(t, filepath.Join(imagesDir, single.Path), "fixture/single")
	checkContent(t, "single:latest", get(t, reg, "/v2/fixture/single/manifests/latest"), single.Digest)
}

func TestCount(t *testing.T) {
	t.Parallel()
	img := loadExpected(t)["single"]
	p := img.Platforms["linux/amd64"]
	reg := registrytest.New(t)
	reg.PushLayout(t, filepath.Join(imagesDir, img.Path), "fixture/single:1")

	steps := []struct {
		method, path string
	}{
		{"GET", "/v2/"},
		{"HEAD", "/v2/fixture/single/manifests/1"},
		{"GET", "/v2/fixture/single/manifests/" + img.Digest.String()},
		{"GET", "/v2/fixture/single/blobs/" + p.Config.String()},
		{"GET", "/v2/fixture/single/blobs/" + p.Config.String()},
		{"HEAD", "/v2/fixture/single/blobs/" + p.Layers[0].String()},
		{"GET", "/v2/fixture/single/tags/list"},
		{"GET", "/v2/fixture/single/manifests/missing"},
		{"POST", "/v2/a/b/c/blobs/uploads/"},
		{"GET", "/v2/fixture/single/referrers/" + img.Digest.String()},
		{"GET", "/v2/_catalog"},
	}
	var wg sync.WaitGroup
	for _, s := range steps {
		send(t, reg, s.method, s.path, nil, nil)
		wg.Go(func() { _ = reg.Counts() }) // reading while serving is safe
	}
	wg.Wait()

	want := []registrytest.Request{
		{Method: "GET", Path: "/v2/", Kind: registrytest.KindOther, Status: 200},
		{Method: "HEAD", Path: "/v2/fixture/single/manifests/1", Kind: registrytest.KindManifest, Repo: "fixture/single", Ref: "1", Status: 200},
		{Method: "GET", Path: "/v2/fixture/single/manifests/" + img.Digest.String(), Kind: registrytest.KindManifest, Repo: "fixture/single", Ref: img.Digest.String(), Status: 200},
		{Method: "GET", Path: "/v2/fixture/single/blobs/" + p.Config.String(), Kind: registrytest.KindBlob, Repo: "fixture/single", Ref: p.Config.String(), Status: 200},
		{Method: "GET", Path: "/v2/fixture/single/blobs/" + p.Config.String(), Kind: registrytest.KindBlob, Repo: "fixture/single", Ref: p.Config.String(), Status: 200},
		{Method: "HEAD", Path: "/v2/fixture/single/blobs/" + p.Layers[0].String(), Kind: registrytest.KindBlob, Repo: "fixture/single", Ref: p.Layers[0].String(), Status: 200},
		{Method: "GET", Path: "/v2/fixture/single/tags/list", Kind: registrytest.KindTags, Repo: "fixture/single", Status: 200},
		{Method: "GET", Path: "/v2/fixture/single/manifests/missing", Kind: registrytest.KindManifest, Repo: "fixture/single", Ref: "missing", Status: 404},
		{Method: "POST", Path: "/v2/a/b/c/blobs/uploads/", Kind: registrytest.KindUpload, Repo: "a/b/c", Status: 202},
		{Method: "GET", Path: "/v2/fixture/single/referrers/" + img.Digest.String(), Kind: registrytest.KindOther, Repo: "fixture/single", Ref: img.Digest.String(), Status: 404},
		{Method: "GET", Path: "/v2/_catalog", Kind: registrytest.KindOther, Status: 200},
	}
	// TestRequestsRecordUserAgent checks UserAgent.
	if diff := cmp.Diff(want, reg.Requests(), cmpopts.IgnoreFields(registrytest.Request{}, "UserAgent")); diff != "" {
		t.Errorf("Requests() (-want +got):\n%s", diff)
	}
	wantCounts := map[string]int{
		"GET other": 3, "HEAD manifest": 1, "GET manifest": 2, "GET blob": 2,
		"HEAD blob": 1, "GET tags": 1, "POST upload": 1,
	}
	if diff := cmp.Diff(wantCounts, reg.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	for _, c := range []struct {
		method, kind string
		want         int
	}{
		{"GET", registrytest.KindBlob, 2},
		{"", registrytest.KindManifest, 3},
		{"HEAD", "", 2},
		{"", "", len(steps)},
		{"PUT", "", 0},
	} {
		if got := reg.Count(c.method, c.kind); got != c.want {
			t.Errorf("Count(%q, %q) = %d, want %d", c.method, c.kind, got, c.want)
		}
	}

	reg.Reset()
	if got := reg.Requests(); len(got) != 0 {
		t.Errorf("after Reset, Requests() = %+v", got)
	}
	get(t, reg, "/v2/")
	if got := reg.Count("GET", registrytest.KindOther); got != 1 {
		t.Errorf("after Reset and one GET, Count = %d, want 1", got)
	}
}

func TestFail(t *testing.T) {
	t.Parallel()
	img := loadExpected(t)["single"]
	p := img.Platforms["linux/amd64"]
	reg := registrytest.New(t)
	reg.PushLayout(t, filepath.Join(imagesDir, img.Path), "fixture/single:1")

	reg.Fail(registrytest.FailRule{Method: "GET", Kind: registrytest.KindManifest, Status: 503, Times: 2})
	reg.Fail(registrytest.FailRule{Repo: "other/repo", Status: 404, Times: -1})
	reg.Fail(registrytest.FailRule{Kind: registrytest.KindBlob, Ref: p.Config.String(), Status: 429, Times: 1})
	reg.Fail(registrytest.FailRule{Kind: registrytest.KindBlob, Ref: p.Layers[0].String(), Status: 500, Body: "boom"})

	var got []int
	for range 3 {
		got = append(got, get(t, reg, "/v2/fixture/single/manifests/1").status)
	}
	if want := []int{503, 503, 200}; !slices.Equal(got, want) {
		t.Errorf("GET manifest statuses %v, want %v", got, want)
	}
	if r := send(t, reg, "HEAD", "/v2/fixture/single/manifests/1", nil, nil); r.status != 200 {
		t.Errorf("HEAD manifest status %d, want 200 (the rule is for GET)", r.status)
	}
	for i := range 5 {
		if r := get(t, reg, "/v2/other/repo/manifests/1"); r.status != 404 || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("other/repo request %d: status %d, Content-Type %q", i, r.status, r.header.Get("Content-Type"))
		}
	}

	r := get(t, reg, "/v2/fixture/single/blobs/"+p.Config.String())
	var doc struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || r.status != 429 || len(doc.Errors) != 1 || doc.Errors[0].Code != "TOOMANYREQUESTS" {
		t.Errorf("config blob: status %d, body %s (%v)", r.status, r.body, err)
	}
	checkContent(t, "config blob after the fault", get(t, reg, "/v2/fixture/single/blobs/"+p.Config.String()), p.Config)

	r = get(t, reg, "/v2/fixture/single/blobs/"+p.Layers[0].String())
	if r.status != 500 || string(r.body) != "boom" {
		t.Errorf("layer blob: status %d, body %q; want 500 boom", r.status, r.body)
	}
	checkContent(t, "layer blob after the fault (Times 0 means once)", get(t, reg, "/v2/fixture/single/blobs/"+p.Layers[0].String()), p.Layers[0])

	var statuses []int
	for _, req := range reg.Requests() {
		statuses = append(statuses, req.Status)
	}
	want := []int{503, 503, 200, 200, 404, 404, 404, 404, 404, 429, 200, 500, 200}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("recorded statuses (-want +got):\n%s", diff)
	}
}

func TestFailRejectsBadRules(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	for _, rule := range []registrytest.FailRule{{Status: 200}, {Status: 0}, {Status: 500, Times: -2}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Fail(%+v) did not panic", rule)
				}
			}()
			reg.Fail(rule)
		}()
	}
}

func TestRequireAuth(t *testing.T) {
	t.Parallel()
	img := loadExpected(t)["single"]
	reg := registrytest.New(t, registrytest.RequireAuth("alice", "s3cret"))
	// Pushes do not need credentials.
	reg.PushLayout(t, filepath.Join(imagesDir, img.Path), "fixture/single:1")

	r := get(t, reg, "/v2/")
	if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Basic realm="test"` {
		t.Errorf("no credentials: status %d, WWW-Authenticate %q", r.status, r.header.Get("WWW-Authenticate"))
	}
	r = send(t, reg, "GET", "/v2/fixture/single/manifests/1", nil, func(req *http.Request) { req.SetBasicAuth("alice", "wrong") })
	if r.status != http.StatusUnauthorized {
		t.Errorf("wrong password: status %d, want 401", r.status)
	}
	r = send(t, reg, "GET", "/v2/fixture/single/manifests/1", nil, func(req *http.Request) { req.SetBasicAuth("alice", "s3cret") })
	checkContent(t, "with credentials", r, img.Digest)

	if diff := cmp.Diff(map[string]int{"GET other": 1, "GET manifest": 2}, reg.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	got := reg.Requests()
	if got[1].Status != 401 || got[2].Status != 200 {
		t.Errorf("recorded statuses %d, %d; want 401, 200", got[1].Status, got[2].Status)
	}
}

func TestWithLatency(t *testing.T) {
	t.Parallel()
	const latency = 100 * time.Millisecond
	img := loadExpected(t)["single"]
	reg := registrytest.New(t, registrytest.WithLatency(latency))
	reg.PushLayout(t, filepath.Join(imagesDir, img.Path), "fixture/single:1")

	start := time.Now()
	checkContent(t, "manifest", get(t, reg, "/v2/fixture/single/manifests/1"), img.Digest)
	if took := time.Since(start); took < latency {
		t.Errorf("GET took %v, want at least %v", took, latency)
	}
}

func TestPushPrimitives(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)

	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDigest := reg.PushBlob(t, "odd/image", cfg)
	if cfgDigest != digest.FromBytes(cfg) {
		t.Fatalf("PushBlob returned %s", cfgDigest)
	}
	// A manifest far larger than any registry allows (4 MiB is the usual
	// limit) still goes through byte for byte.
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgDigest, Size: int64(len(cfg))},
		Layers:    []ocispec.Descriptor{},
		Annotations: map[string]string{
			"org.example.padding": strings.Repeat("x", 5<<20),
		},
	}
	m.SchemaVersion = 2
	dt, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	desc := reg.PushManifest(t, "odd/image", "big", ocispec.MediaTypeImageManifest, dt)
	want := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(dt), Size: int64(len(dt))}
	if diff := cmp.Diff(want, desc, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("PushManifest (-want +got):\n%s", diff)
	}
	checkContent(t, "big manifest", get(t, reg, "/v2/odd/image/manifests/big"), desc.Digest)
	checkContent(t, "config", get(t, reg, "/v2/odd/image/blobs/"+cfgDigest.String()), cfgDigest)
	if got := reg.Count("", ""); got != 2 {
		t.Errorf("Count = %d, want 2 (pushes are not counted)", got)
	}
}

// fatalRecorder stands in for a testing.TB to observe Fatalf.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// expectFatal runs fn on its own goroutine, as t.Fatalf needs, and returns
// the message fn failed with.
func expectFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	if f.msg == "" {
		t.Fatal("Fatalf was not called")
	}
	return f.msg
}

func TestMisuseFailsTheTest(t *testing.T) {
	t.Parallel()
	twoEntries := t.TempDir()
	if err := os.WriteFile(filepath.Join(twoEntries, "index.json"), []byte(`{"schemaVersion":2,"manifests":[
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},
		{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(imagesDir, "single")

	for _, c := range []struct {
		name, want string
		fn         func(tb testing.TB)
	}{
		{"negative latency", "negative duration", func(tb testing.TB) { registrytest.New(tb, registrytest.WithLatency(-time.Second)) }},
		{"empty user", "empty user", func(tb testing.TB) { registrytest.New(tb, registrytest.RequireAuth("", "x")) }},
		{"two entries", "lists 2 entries", func(tb testing.TB) { registrytest.New(tb).PushLayout(tb, twoEntries, "x/y:1") }},
		{"no such ref", `no entry named "nope"`, func(tb testing.TB) { registrytest.New(tb).PushLayoutRef(tb, single, "nope", "x/y:1") }},
		{"bad reference", "bad repository reference", func(tb testing.TB) { registrytest.New(tb).PushLayout(tb, single, "x/y:") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if msg := expectFatal(t, c.fn); !strings.Contains(msg, c.want) {
				t.Errorf("Fatalf(%q), want it to mention %q", msg, c.want)
			}
		})
	}
}

// TestFixturesWithRemoteClient pulls every pushed fixture with
// go-containerregistry's client and validates it (digests, sizes, and
// diff_ids against the uncompressed layers), through Basic auth: the
// fixtures are valid images and the registry serves them to a real client.
func TestFixturesWithRemoteClient(t *testing.T) {
	t.Parallel()
	for name, img := range loadExpected(t) {
		if img.Reject != "" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t, registrytest.RequireAuth("bob", "pw"))
			reg.PushLayout(t, filepath.Join(imagesDir, img.Path), "fixture/"+name+":1")
			ref, err := gcrname.ParseReference(reg.Host()+"/fixture/"+name+":1", gcrname.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			opts := []remote.Option{remote.WithContext(t.Context()), remote.WithAuth(&authn.Basic{Username: "bob", Password: "pw"})}
			d, err := remote.Get(ref, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if d.Digest.String() != img.Digest.String() {
				t.Errorf("remote digest %s, want %s", d.Digest, img.Digest)
			}
			if d.MediaType.IsIndex() {
				idx, err := d.ImageIndex()
				if err != nil {
					t.Fatal(err)
				}
				if err := validate.Index(idx); err != nil {
					t.Error(err)
				}
				return
			}
			im, err := d.Image()
			if err != nil {
				t.Fatal(err)
			}
			var vopts []validate.Option
			for _, mt := range img.Platforms["linux/amd64"].LayerMediaTypes {
				if !strings.HasSuffix(mt, "gzip") {
					// validate decompresses every layer as gzip; the
					// uncompressed and zstd fixtures' diff_ids are checked
					// by gen.py instead.
					vopts = append(vopts, validate.Fast)
					break
				}
			}
			if err := validate.Image(im, vopts...); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestThrottleBlobs(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := bytes.Repeat([]byte("x"), 64<<10)
	d := reg.PushBlob(t, "slow/blob", data)
	reg.ThrottleBlobs(256 << 10) // 64 KiB at 256 KiB/s: about 250 ms
	start := time.Now()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL()+"/v2/slow/blob/blobs/"+d.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("throttled body: %d bytes, %v", len(body), err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("64 KiB at 256 KiB/s took only %s", took)
	}
}

func TestRequestsRecordUserAgent(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	send(t, reg, http.MethodGet, "/v2/", nil, func(r *http.Request) { r.Header.Set("User-Agent", "buildkit/v0.34.1") })
	send(t, reg, http.MethodGet, "/v2/", nil, func(r *http.Request) { r.Header.Set("User-Agent", "containerd/1.6.20") })
	var got []string
	for _, r := range reg.Requests() {
		got = append(got, r.UserAgent)
	}
	if diff := cmp.Diff([]string{"buildkit/v0.34.1", "containerd/1.6.20"}, got); diff != "" {
		t.Errorf("recorded user agents (-want +got):\n%s", diff)
	}
}
