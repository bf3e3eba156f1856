package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/failure"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// mediaTypeCacheConfig is BuildKit's cache config blob.
const mediaTypeCacheConfig = "application/vnd.buildkit.cacheconfig.v0"

// cacheBlob is one blob of a test cache export.
type cacheBlob struct {
	desc ocispec.Descriptor
	data []byte
}

// cacheExport is what BuildKit's registry cache exporter writes: layer
// blobs, a cache config blob, and an index listing them, pushed by tag.
type cacheExport struct {
	blobs []cacheBlob
	index ocispec.Descriptor
	data  []byte
}

// newCacheExport builds a cache export whose content depends on seed.
func newCacheExport(t *testing.T, seed string) cacheExport {
	t.Helper()
	var ex cacheExport
	add := func(mediaType string, data []byte) {
		ex.blobs = append(ex.blobs, cacheBlob{
			desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))},
			data: data,
		})
	}
	add(ocispec.MediaTypeImageLayerGzip, bytes.Repeat([]byte("layer one "+seed+"\n"), 10000))
	add(ocispec.MediaTypeImageLayerGzip, bytes.Repeat([]byte("layer two "+seed+"\n"), 3))
	add(mediaTypeCacheConfig, []byte(`{"layers":[{"blob":"`+ex.blobs[0].desc.Digest.String()+`"}],"seed":"`+seed+`"}`))
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for _, b := range ex.blobs {
		idx.Manifests = append(idx.Manifests, b.desc)
	}
	data, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	ex.data = data
	ex.index = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}
	return ex
}

// source is an open func for PushBlob serving data, counting its calls.
type source struct {
	data  []byte
	calls atomic.Int32
}

func (s *source) open(context.Context) (io.ReadCloser, error) {
	s.calls.Add(1)
	return io.NopCloser(bytes.NewReader(s.data)), nil
}

// mustNotOpen is an open func for pushes that must send no content.
func mustNotOpen(t *testing.T) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) {
		t.Error("open was called for a blob that needed no upload")
		return nil, errors.New("open must not be called")
	}
}

// pushExport pushes every blob of ex with opens, then the index, to ref,
// and returns the PushResults.
func pushExport(t *testing.T, c *registry.Client, ref string, ex cacheExport, descs func(ocispec.Descriptor) ocispec.Descriptor, open func(b cacheBlob) func(context.Context) (io.ReadCloser, error)) []registry.PushResult {
	t.Helper()
	var results []registry.PushResult
	for _, b := range ex.blobs {
		res, err := c.PushBlob(t.Context(), ref, descs(b.desc), open(b))
		if err != nil {
			t.Fatalf("PushBlob(%s, %s): %v", ref, b.desc.Digest, err)
		}
		results = append(results, res)
	}
	if err := c.PushManifest(t.Context(), ref, ex.index, ex.data); err != nil {
		t.Fatalf("PushManifest(%s): %v", ref, err)
	}
	return results
}

func plainDesc(d ocispec.Descriptor) ocispec.Descriptor { return d }

func openData(b cacheBlob) func(context.Context) (io.ReadCloser, error) {
	return (&source{data: b.data}).open
}

// checkExport reads ex back from ref with the client and from the
// registry's storage.
func checkExport(t *testing.T, c *registry.Client, reg *registrytest.Registry, ref, repo, tag string, ex cacheExport) {
	t.Helper()
	desc, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", ref, err)
	}
	if diff := cmp.Diff(ex.index, desc); diff != "" {
		t.Errorf("Resolve(%s) (-want +got):\n%s", ref, diff)
	}
	got, err := c.FetchManifest(t.Context(), ref, desc)
	if err != nil {
		t.Fatalf("FetchManifest(%s): %v", ref, err)
	}
	if !bytes.Equal(got, ex.data) {
		t.Errorf("FetchManifest(%s) = %q, want %q", ref, got, ex.data)
	}
	stored, mediaType := reg.Manifest(t, repo, tag)
	if !bytes.Equal(stored, ex.data) || mediaType != ex.index.MediaType {
		t.Errorf("registry holds %q (%s) under %s:%s, want %q (%s)", stored, mediaType, repo, tag, ex.data, ex.index.MediaType)
	}
	for _, b := range ex.blobs {
		rc, err := c.Open(t.Context(), ref, b.desc)
		if err != nil {
			t.Fatalf("Open(%s): %v", b.desc.Digest, err)
		}
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatalf("read %s: %v", b.desc.Digest, err)
		}
		if !bytes.Equal(got, b.data) {
			t.Errorf("Open(%s) read %d bytes with digest %s", b.desc.Digest, len(got), digest.FromBytes(got))
		}
		if _, ok := reg.Blob(repo, b.desc.Digest); !ok {
			t.Errorf("registry storage: %s has no blob %s", repo, b.desc.Digest)
		}
	}
}

func TestPushToEmptyRepository(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, registry.Config{})
	ex := newCacheExport(t, "a")
	ref := reg.Host() + "/cache/app:buildcache"

	results := pushExport(t, c, ref, ex, plainDesc, openData)
	want := []registry.PushResult{{Uploaded: true}, {Uploaded: true}, {Uploaded: true}}
	if diff := cmp.Diff(want, results); diff != "" {
		t.Errorf("PushResults (-want +got):\n%s", diff)
	}
	// Per blob a HEAD (404), a POST starting the upload and one PUT with
	// the content; for the index a HEAD of the tag (404) and a PUT.
	wantCounts := map[string]int{"HEAD blob": 3, "POST upload": 3, "PUT upload": 3, "HEAD manifest": 1, "PUT manifest": 1}
	if diff := cmp.Diff(wantCounts, reg.Counts()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	for _, u := range reg.Uploads() {
		if u.Method != http.MethodPut || u.Status != http.StatusCreated || !strings.Contains(u.Query, "digest=") {
			t.Errorf("upload %s %s?%s answered %d, want a PUT with digest= answered 201", u.Method, u.Path, u.Query, u.Status)
		}
	}
	checkExport(t, c, reg, ref, "cache/app", "buildcache", ex)
}

func TestPushAgainUploadsNothing(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	ex := newCacheExport(t, "a")
	ref := reg.Host() + "/cache/app:buildcache"
	first := newClient(t, registry.Config{})
	pushExport(t, first, ref, ex, plainDesc, openData)

	// The same Client again, and a new one: both must ask the registry,
	// not remember.
	for name, c := range map[string]*registry.Client{"same client": first, "new client": newClient(t, registry.Config{})} {
		t.Run(name, func(t *testing.T) {
			reg.Reset()
			results := pushExport(t, c, ref, ex, plainDesc, func(cacheBlob) func(context.Context) (io.ReadCloser, error) { return mustNotOpen(t) })
			want := []registry.PushResult{{Existed: true}, {Existed: true}, {Existed: true}}
			if diff := cmp.Diff(want, results); diff != "" {
				t.Errorf("PushResults (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]int{"HEAD blob": 3, "HEAD manifest": 1}, reg.Counts()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			if u := reg.Uploads(); len(u) != 0 {
				t.Errorf("uploads: %+v", u)
			}
		})
	}
}

// A Client that pushed a blob to one repository, or a manifest under one
// tag, still pushes it to another: containerd's resolver remembers pushes
// by digest alone, and PushBlob must not let it answer for the registry.
func TestPushElsewhereAfterPushing(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, registry.Config{})
	ex := newCacheExport(t, "a")
	pushExport(t, c, reg.Host()+"/cache/one:1", ex, plainDesc, openData)

	reg.Reset()
	if err := c.PushManifest(t.Context(), reg.Host()+"/cache/one:2", ex.index, ex.data); err != nil {
		t.Fatalf("PushManifest to a second tag: %v", err)
	}
	if diff := cmp.Diff(map[string]int{"HEAD manifest": 1, "PUT manifest": 1}, reg.Counts()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	checkExport(t, c, reg, reg.Host()+"/cache/one:2", "cache/one", "2", ex)

	ref := reg.Host() + "/cache/two:1"
	results := pushExport(t, c, ref, ex, plainDesc, openData)
	want := []registry.PushResult{{Uploaded: true}, {Uploaded: true}, {Uploaded: true}}
	if diff := cmp.Diff(want, results); diff != "" {
		t.Errorf("PushResults to a second repository (-want +got):\n%s", diff)
	}
	checkExport(t, c, reg, ref, "cache/two", "1", ex)
}

func TestPushMountsFromAnotherRepository(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, registry.Config{})
	ex := newCacheExport(t, "a")
	srcRef := reg.Host() + "/cache/base:1"
	pushExport(t, c, srcRef, ex, plainDesc, openData)

	reg.Reset()
	ref := reg.Host() + "/cache/app:1"
	fromBase := func(d ocispec.Descriptor) ocispec.Descriptor {
		out, err := registry.MountFrom(d, srcRef)
		if err != nil {
			t.Fatalf("MountFrom: %v", err)
		}
		return out
	}
	results := pushExport(t, c, ref, ex, fromBase, func(cacheBlob) func(context.Context) (io.ReadCloser, error) { return mustNotOpen(t) })
	want := []registry.PushResult{{Mounted: true}, {Mounted: true}, {Mounted: true}}
	if diff := cmp.Diff(want, results); diff != "" {
		t.Errorf("PushResults (-want +got):\n%s", diff)
	}
	if u := reg.Uploads(); len(u) != 0 {
		t.Errorf("uploads: %+v", u)
	}
	mounts := reg.Mounts()
	if len(mounts) != len(ex.blobs) {
		t.Fatalf("%d mount requests, want %d: %+v", len(mounts), len(ex.blobs), mounts)
	}
	for i, m := range mounts {
		q, err := url.ParseQuery(m.Query)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%s %s mount=%s from=%s -> %d", m.Method, m.Path, q.Get("mount"), q.Get("from"), m.Status)
		wantReq := fmt.Sprintf("POST /v2/cache/app/blobs/uploads/ mount=%s from=cache/base -> 201", ex.blobs[i].desc.Digest)
		if got != wantReq {
			t.Errorf("mount %d: %s, want %s", i, got, wantReq)
		}
	}
	// Per blob a HEAD (404) and the mount; no PUT of content.
	wantCounts := map[string]int{"HEAD blob": 3, "POST upload": 3, "HEAD manifest": 1, "PUT manifest": 1}
	if diff := cmp.Diff(wantCounts, reg.Counts()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	checkExport(t, c, reg, ref, "cache/app", "1", ex)
}

func TestPushMountFallsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// pushTo lists the repositories the blob is in before the push.
		pushTo []string
		// from is the repository the annotation names.
		from string
		want registry.PushResult
		// mounts are the statuses of the mount requests.
		mounts []int
	}{
		{name: "source lacks the blob", pushTo: nil, from: "cache/empty", want: registry.PushResult{Uploaded: true}, mounts: []int{http.StatusAccepted}},
		{name: "target has it already", pushTo: []string{"cache/base", "cache/app"}, from: "cache/base", want: registry.PushResult{Existed: true}},
		{name: "source is the target", pushTo: nil, from: "cache/app", want: registry.PushResult{Uploaded: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			data := []byte("a blob for " + tt.name)
			for _, repo := range tt.pushTo {
				reg.PushBlob(t, repo, data)
			}
			desc, err := registry.MountFrom(ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(data), Size: int64(len(data))}, reg.Host()+"/"+tt.from)
			if err != nil {
				t.Fatal(err)
			}
			src := &source{data: data}
			got, err := newClient(t, registry.Config{}).PushBlob(t.Context(), reg.Host()+"/cache/app", desc, src.open)
			if err != nil {
				t.Fatalf("PushBlob: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PushResult (-want +got):\n%s", diff)
			}
			var mounts []int
			for _, m := range reg.Mounts() {
				mounts = append(mounts, m.Status)
			}
			if diff := cmp.Diff(tt.mounts, mounts); diff != "" {
				t.Errorf("mount statuses (-want +got):\n%s", diff)
			}
			wantCalls := int32(0)
			if tt.want.Uploaded {
				wantCalls = 1
			}
			if n := src.calls.Load(); n != wantCalls {
				t.Errorf("open called %d times, want %d", n, wantCalls)
			}
			if _, ok := reg.Blob("cache/app", desc.Digest); !ok {
				t.Errorf("cache/app has no blob %s after the push", desc.Digest)
			}
		})
	}
}

func TestMountFrom(t *testing.T) {
	t.Parallel()
	d := digest.FromString("blob")
	const key = registry.AnnotationDistributionSource + ".registry.example.com"
	tests := []struct {
		name string
		in   map[string]string
		ref  string
		want map[string]string
	}{
		{name: "no annotations", ref: "registry.example.com:5000/cache/a:tag", want: map[string]string{key: "cache/a"}},
		{name: "another source", in: map[string]string{key: "cache/b", "x": "y"}, ref: "registry.example.com/cache/a", want: map[string]string{key: "cache/b,cache/a", "x": "y"}},
		{name: "already named", in: map[string]string{key: "cache/a,cache/b"}, ref: "registry.example.com/cache/a@" + d.String(), want: map[string]string{key: "cache/a,cache/b"}},
		{name: "other host", in: map[string]string{key: "cache/b"}, ref: "other.example.com/c", want: map[string]string{key: "cache/b", registry.AnnotationDistributionSource + ".other.example.com": "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: 4, Annotations: tt.in}
			var before map[string]string
			if tt.in != nil {
				before = map[string]string{}
				for k, v := range tt.in {
					before[k] = v
				}
			}
			got, err := registry.MountFrom(in, tt.ref)
			if err != nil {
				t.Fatalf("MountFrom: %v", err)
			}
			want := in
			want.Annotations = tt.want
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("MountFrom (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, in.Annotations); diff != "" {
				t.Errorf("MountFrom changed its argument's annotations (-before +after):\n%s", diff)
			}
		})
	}
	_, err := registry.MountFrom(ocispec.Descriptor{Digest: d}, "bad host/a")
	_ = checkError(t, "MountFrom", err, wantError{op: registry.OpPush, ref: "bad host/a", kind: failure.KindInvalid, contains: "bad reference"})
}

func TestPushAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		configDir func(t *testing.T, host string) string
		ok        bool
	}{
		{name: "no credentials", configDir: func(*testing.T, string) string { return "" }},
		{name: "wrong password", configDir: func(t *testing.T, host string) string { return writeDockerConfig(t, host, "alice", "wrong") }},
		{name: "right credentials", configDir: func(t *testing.T, host string) string { return writeDockerConfig(t, host, "alice", "s3cret") }, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t, registrytest.RequireAuth("alice", "s3cret"))
			c := newClient(t, registry.Config{DockerConfigDir: tt.configDir(t, reg.Host())})
			ex := newCacheExport(t, "a")
			ref := reg.Host() + "/cache/app:1"
			if tt.ok {
				results := pushExport(t, c, ref, ex, plainDesc, openData)
				want := []registry.PushResult{{Uploaded: true}, {Uploaded: true}, {Uploaded: true}}
				if diff := cmp.Diff(want, results); diff != "" {
					t.Errorf("PushResults (-want +got):\n%s", diff)
				}
				checkExport(t, c, reg, ref, "cache/app", "1", ex)
				// A mount to a second repository needs the same credentials.
				desc, err := registry.MountFrom(ex.blobs[0].desc, ref)
				if err != nil {
					t.Fatal(err)
				}
				res, err := c.PushBlob(t.Context(), reg.Host()+"/cache/other:1", desc, mustNotOpen(t))
				if err != nil || !res.Mounted {
					t.Errorf("PushBlob with a mount = %+v, %v; want mounted", res, err)
				}
				if has, err := c.HasBlob(t.Context(), reg.Host()+"/cache/other", desc); err != nil || !has {
					t.Errorf("HasBlob after the mount = %v, %v; want true", has, err)
				}
				return
			}
			b := ex.blobs[0]
			_, err := c.PushBlob(t.Context(), ref, b.desc, mustNotOpen(t))
			_ = checkError(t, "PushBlob", err, wantError{op: registry.OpPush, ref: ref, kind: failure.KindUnauthorized, status: http.StatusUnauthorized})
			err = c.PushManifest(t.Context(), ref, ex.index, ex.data)
			_ = checkError(t, "PushManifest", err, wantError{op: registry.OpPush, ref: ref, kind: failure.KindUnauthorized, status: http.StatusUnauthorized})
			_, err = c.HasBlob(t.Context(), ref, b.desc)
			_ = checkError(t, "HasBlob", err, wantError{op: registry.OpResolve, ref: ref, kind: failure.KindUnauthorized, status: http.StatusUnauthorized})
			if _, ok := reg.Blob("cache/app", b.desc.Digest); ok {
				t.Errorf("the registry has the blob after a refused push")
			}
			if n := countStatus(reg, http.StatusUnauthorized); n == 0 {
				t.Errorf("the registry answered no request with 401")
			}
		})
	}
}

func TestPushFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		rule      registrytest.FailRule
		manifest  bool
		kind      failure.Kind
		status    int
		temporary bool
		// opens is how many times open must be called.
		opens int32
	}{
		{name: "500 starting the upload", rule: registrytest.FailRule{Method: http.MethodPost, Kind: registrytest.KindUpload, Status: http.StatusInternalServerError, Times: -1},
			kind: failure.KindUnavailable, status: http.StatusInternalServerError, temporary: true},
		{name: "500 on the upload", rule: registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindUpload, Status: http.StatusInternalServerError, Times: -1},
			kind: failure.KindUnavailable, status: http.StatusInternalServerError, temporary: true, opens: 2},
		{name: "503 on the upload", rule: registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindUpload, Status: http.StatusServiceUnavailable, Times: -1},
			kind: failure.KindUnavailable, status: http.StatusServiceUnavailable, temporary: true, opens: 2},
		{name: "403 on the upload", rule: registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindUpload, Status: http.StatusForbidden, Times: -1},
			kind: failure.KindUnauthorized, status: http.StatusForbidden, opens: 1},
		{name: "400 on the upload", rule: registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindUpload, Status: http.StatusBadRequest, Times: -1},
			kind: failure.KindInvalid, status: http.StatusBadRequest, opens: 1},
		{name: "500 on the existence check", rule: registrytest.FailRule{Method: http.MethodHead, Kind: registrytest.KindBlob, Status: http.StatusInternalServerError, Times: -1},
			kind: failure.KindUnavailable, status: http.StatusInternalServerError, temporary: true},
		{name: "500 on the manifest", manifest: true, rule: registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindManifest, Status: http.StatusInternalServerError, Times: -1},
			kind: failure.KindUnavailable, status: http.StatusInternalServerError, temporary: true},
		{name: "400 on the manifest", manifest: true, rule: registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindManifest, Status: http.StatusBadRequest, Times: -1},
			kind: failure.KindInvalid, status: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			c := newClient(t, registry.Config{})
			ex := newCacheExport(t, "a")
			ref := reg.Host() + "/cache/app:1"
			reg.Fail(tt.rule)
			var err error
			if tt.manifest {
				err = c.PushManifest(t.Context(), ref, ex.index, ex.data)
			} else {
				b := ex.blobs[0]
				src := &source{data: b.data}
				var res registry.PushResult
				res, err = c.PushBlob(t.Context(), ref, b.desc, src.open)
				if res != (registry.PushResult{}) {
					t.Errorf("failed PushBlob returned %+v", res)
				}
				if n := src.calls.Load(); n != tt.opens {
					t.Errorf("open called %d times, want %d", n, tt.opens)
				}
				if _, ok := reg.Blob("cache/app", b.desc.Digest); ok {
					t.Errorf("the registry has the blob after a failed push")
				}
			}
			_ = checkError(t, tt.name, err, wantError{op: registry.OpPush, ref: ref, kind: tt.kind, status: tt.status, temporary: tt.temporary})
			if n := countStatus(reg, tt.status); n == 0 {
				t.Errorf("the registry answered no request with %d", tt.status)
			}
		})
	}
}

// One 503 on the upload: containerd retries the PUT with a new body, and
// PushBlob sends the content again from a new open.
func TestPushRetriesUpload(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	ex := newCacheExport(t, "a")
	ref := reg.Host() + "/cache/app:1"
	reg.Fail(registrytest.FailRule{Method: http.MethodPut, Kind: registrytest.KindUpload, Status: http.StatusServiceUnavailable})
	b := ex.blobs[0]
	src := &source{data: b.data}
	res, err := newClient(t, registry.Config{}).PushBlob(t.Context(), ref, b.desc, src.open)
	if err != nil {
		t.Fatalf("PushBlob after one 503: %v", err)
	}
	if !res.Uploaded {
		t.Errorf("PushResult = %+v, want uploaded", res)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("open called %d times, want 2", n)
	}
	var got []int
	for _, u := range reg.Uploads() {
		got = append(got, u.Status)
	}
	if diff := cmp.Diff([]int{http.StatusServiceUnavailable, http.StatusCreated}, got); diff != "" {
		t.Errorf("upload statuses (-want +got):\n%s", diff)
	}
	if data, ok := reg.Blob("cache/app", b.desc.Digest); !ok || !bytes.Equal(data, b.data) {
		t.Errorf("the registry does not hold the blob as pushed")
	}
}

func TestPushWrongContent(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("the real content\n"), 4000)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(data), Size: int64(len(data))}
	other := bytes.Clone(data)
	other[len(other)-1] = '!'
	errDisk := errors.New("disk on fire")
	tests := []struct {
		name     string
		open     func(context.Context) (io.ReadCloser, error)
		kind     failure.Kind
		contains string
		// is, when set, must be in the error's chain.
		is error
	}{
		{name: "other bytes of the same size", open: (&source{data: other}).open, kind: failure.KindInvalid, contains: "content has digest " + digest.FromBytes(other).String()},
		{name: "one byte short", open: (&source{data: data[:len(data)-1]}).open, kind: failure.KindInvalid, contains: fmt.Sprintf("got %d bytes, want %d", len(data)-1, len(data))},
		{name: "one byte more", open: (&source{data: append(bytes.Clone(data), 'x')}).open, kind: failure.KindInvalid, contains: "more than the descriptor's"},
		{name: "empty", open: (&source{}).open, kind: failure.KindInvalid, contains: "got 0 bytes"},
		{name: "open fails", open: func(context.Context) (io.ReadCloser, error) { return nil, errDisk }, kind: failure.KindInvalid, is: errDisk},
		{name: "read fails", open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(bytes.NewReader(data[:100]), iotestErrReader{errDisk})), nil
		}, kind: failure.KindInvalid, is: errDisk},
		{name: "the source is a registry that is down", open: func(context.Context) (io.ReadCloser, error) {
			return nil, &registry.Error{Op: registry.OpFetch, Ref: "elsewhere/x", Kind: failure.KindUnavailable, Err: errDisk}
		}, kind: failure.KindUnavailable, is: errDisk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			c := newClient(t, registry.Config{})
			ref := reg.Host() + "/cache/app:1"
			res, err := c.PushBlob(t.Context(), ref, desc, tt.open)
			if res != (registry.PushResult{}) {
				t.Errorf("failed PushBlob returned %+v", res)
			}
			_ = checkError(t, "PushBlob", err, wantError{op: registry.OpPush, ref: ref, kind: tt.kind, temporary: tt.kind == failure.KindUnavailable, contains: tt.contains})
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("PushBlob error %v does not wrap %v", err, tt.is)
			}
			has, err := c.HasBlob(t.Context(), ref, desc)
			if err != nil {
				t.Fatalf("HasBlob: %v", err)
			}
			if has {
				t.Errorf("HasBlob is true after a push of the wrong content")
			}
			if _, ok := reg.Blob("cache/app", desc.Digest); ok {
				t.Errorf("the registry stored the blob")
			}
			for _, u := range reg.Uploads() {
				if u.Status == http.StatusCreated {
					t.Errorf("the registry committed an upload: %+v", u)
				}
			}
		})
	}
}

// iotestErrReader fails every Read with err.
type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func TestPushInvalid(t *testing.T) {
	t.Parallel()
	ex := newCacheExport(t, "a")
	blob := ex.blobs[0]
	tests := []struct {
		name string
		// ref is appended to the registry's host.
		ref      string
		call     func(t *testing.T, c *registry.Client, ref string) error
		contains string
	}{
		{name: "manifest without a tag", ref: "/cache/app", contains: "names no tag", call: func(t *testing.T, c *registry.Client, ref string) error {
			return c.PushManifest(t.Context(), ref, ex.index, ex.data)
		}},
		{name: "manifest by digest only", ref: "/cache/app@" + ex.index.Digest.String(), contains: "names no tag", call: func(t *testing.T, c *registry.Client, ref string) error {
			return c.PushManifest(t.Context(), ref, ex.index, ex.data)
		}},
		{name: "manifest with another digest", ref: "/cache/app:1@" + blob.desc.Digest.String(), contains: "names digest", call: func(t *testing.T, c *registry.Client, ref string) error {
			return c.PushManifest(t.Context(), ref, ex.index, ex.data)
		}},
		{name: "manifest with a blob media type", ref: "/cache/app:1", contains: "not a manifest or index", call: func(t *testing.T, c *registry.Client, ref string) error {
			d := ex.index
			d.MediaType = mediaTypeCacheConfig
			return c.PushManifest(t.Context(), ref, d, ex.data)
		}},
		{name: "manifest bytes not matching", ref: "/cache/app:1", contains: "content has digest", call: func(t *testing.T, c *registry.Client, ref string) error {
			data := bytes.Clone(ex.data)
			data[len(data)-1] = ' '
			return c.PushManifest(t.Context(), ref, ex.index, data)
		}},
		{name: "manifest over the cap", ref: "/cache/app:1", contains: "byte cap", call: func(t *testing.T, c *registry.Client, ref string) error {
			small := newClient(t, registry.Config{MaxManifestBytes: 10})
			return small.PushManifest(t.Context(), ref, ex.index, ex.data)
		}},
		{name: "manifest with a bad reference", ref: "/cache/app:1@sha256:abc", contains: "bad reference", call: func(t *testing.T, c *registry.Client, ref string) error {
			return c.PushManifest(t.Context(), ref, ex.index, ex.data)
		}},
		{name: "blob with a manifest media type", ref: "/cache/app", contains: "push it with PushManifest", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.PushBlob(t.Context(), ref, ex.index, mustNotOpen(t))
			return err
		}},
		{name: "blob with a bad digest", ref: "/cache/app", contains: "bad digest", call: func(t *testing.T, c *registry.Client, ref string) error {
			d := blob.desc
			d.Digest = "sha256:abc"
			_, err := c.PushBlob(t.Context(), ref, d, mustNotOpen(t))
			return err
		}},
		{name: "blob with a negative size", ref: "/cache/app", contains: "negative size", call: func(t *testing.T, c *registry.Client, ref string) error {
			d := blob.desc
			d.Size = -1
			_, err := c.PushBlob(t.Context(), ref, d, mustNotOpen(t))
			return err
		}},
		{name: "blob without a source", ref: "/cache/app", contains: "no content source", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.PushBlob(t.Context(), ref, blob.desc, nil)
			return err
		}},
		{name: "blob with a bad reference", ref: "/cache/app@sha256:abc", contains: "bad reference", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.PushBlob(t.Context(), ref, blob.desc, mustNotOpen(t))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			ref := reg.Host() + tt.ref
			err := tt.call(t, newClient(t, registry.Config{}), ref)
			_ = checkError(t, tt.name, err, wantError{op: registry.OpPush, ref: ref, kind: failure.KindInvalid, contains: tt.contains})
			if n := reg.Count("", ""); n != 0 {
				t.Errorf("%d requests reached the registry, want 0: %+v", n, reg.Requests())
			}
		})
	}
}

func TestHasBlob(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := []byte("present")
	d := reg.PushBlob(t, "cache/app", data)
	present := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(data))}
	absent := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("absent"), Size: 6}
	c := newClient(t, registry.Config{})
	tests := []struct {
		name string
		ref  string
		desc ocispec.Descriptor
		want bool
	}{
		{name: "present", ref: "/cache/app", desc: present, want: true},
		{name: "present, with a tag", ref: "/cache/app:1", desc: present, want: true},
		{name: "absent", ref: "/cache/app", desc: absent},
		{name: "in another repository only", ref: "/cache/other", desc: present},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.Reset()
			got, err := c.HasBlob(t.Context(), reg.Host()+tt.ref, tt.desc)
			if err != nil {
				t.Fatalf("HasBlob: %v", err)
			}
			if got != tt.want {
				t.Errorf("HasBlob = %v, want %v", got, tt.want)
			}
			if diff := cmp.Diff(map[string]int{"HEAD blob": 1}, reg.Counts()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		for _, e := range []struct {
			status    int
			kind      failure.Kind
			temporary bool
		}{
			{status: http.StatusForbidden, kind: failure.KindUnauthorized},
			{status: http.StatusBadRequest, kind: failure.KindInvalid},
			{status: http.StatusServiceUnavailable, kind: failure.KindUnavailable, temporary: true},
		} {
			repo := "cache/err" + fmt.Sprint(e.status)
			reg.Fail(registrytest.FailRule{Method: http.MethodHead, Kind: registrytest.KindBlob, Repo: repo, Status: e.status, Times: -1})
			ref := reg.Host() + "/" + repo
			_, err := c.HasBlob(t.Context(), ref, present)
			_ = checkError(t, fmt.Sprint("HasBlob with ", e.status), err, wantError{op: registry.OpResolve, ref: ref, kind: e.kind, status: e.status, temporary: e.temporary})
		}
	})
	t.Run("bad digest", func(t *testing.T) {
		ref := reg.Host() + "/cache/app"
		_, err := c.HasBlob(t.Context(), ref, ocispec.Descriptor{Digest: "sha256:abc"})
		_ = checkError(t, "HasBlob", err, wantError{op: registry.OpResolve, ref: ref, kind: failure.KindInvalid, contains: "bad digest"})
	})
}

// A registry that stops reading an upload makes PushBlob fail after about
// the timeout instead of hanging.
func TestPushStalledUpload(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	gate := reg.Gate(http.MethodPut, registrytest.KindUpload)
	t.Cleanup(gate.Release)
	data := bytes.Repeat([]byte("stall"), 16<<20/5) // more than the socket buffers hold
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(data), Size: int64(len(data))}
	const timeout = 300 * time.Millisecond
	ref := reg.Host() + "/cache/app:1"
	start := time.Now()
	_, err := newClient(t, registry.Config{Timeout: timeout}).PushBlob(t.Context(), ref, desc, (&source{data: data}).open)
	_ = checkError(t, "PushBlob", err, wantError{op: registry.OpPush, ref: ref, kind: failure.KindUnavailable, temporary: true, contains: "stopped accepting data"})
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a stalled upload failed after %v with a %v timeout", took, timeout)
	}
	select {
	case <-gate.Arrived():
	default:
		t.Errorf("the upload never reached the registry")
	}
}

func TestConcurrentPushes(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t, registrytest.RequireAuth("alice", "s3cret"))
	c := newClient(t, registry.Config{DockerConfigDir: writeDockerConfig(t, reg.Host(), "alice", "s3cret")})
	ref := reg.Host() + "/cache/app:1"
	const workers = 8
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	var descs []ocispec.Descriptor
	for i := range workers {
		data := bytes.Repeat([]byte(fmt.Sprintf("blob %d\n", i)), 1000*(i+1))
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(data), Size: int64(len(data))}
		descs = append(descs, desc)
		wg.Go(func() {
			res, err := c.PushBlob(t.Context(), ref, desc, (&source{data: data}).open)
			if err == nil && !res.Uploaded {
				err = fmt.Errorf("%s: %+v, want uploaded", desc.Digest, res)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, d := range descs {
		if _, ok := reg.Blob("cache/app", d.Digest); !ok {
			t.Errorf("the registry has no blob %s", d.Digest)
		}
	}
}
