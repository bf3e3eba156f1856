package registry_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// imagesDir holds the fixture layouts and expected.json (see its README).
const imagesDir = "../../testdata/images"

type expectedPlatform struct {
	Manifest          digest.Digest   `json:"manifest"`
	ManifestMediaType string          `json:"manifest_media_type"`
	ManifestSize      int64           `json:"manifest_size"`
	Config            digest.Digest   `json:"config"`
	ConfigMediaType   string          `json:"config_media_type"`
	Layers            []digest.Digest `json:"layers"`
	LayerMediaTypes   []string        `json:"layer_media_types"`
}

type expectedImage struct {
	Path      string                      `json:"path"`
	MediaType string                      `json:"media_type"`
	Digest    digest.Digest               `json:"digest"`
	Size      int64                       `json:"size"`
	Platforms map[string]expectedPlatform `json:"platforms"`
}

var (
	expectedOnce sync.Once
	expected     map[string]expectedImage
	expectedErr  error
)

// fixture returns one image of testdata/images/expected.json.
func fixture(t *testing.T, name string) expectedImage {
	t.Helper()
	expectedOnce.Do(func() {
		data, err := os.ReadFile(filepath.Join(imagesDir, "expected.json"))
		if err != nil {
			expectedErr = err
			return
		}
		var doc struct {
			Images map[string]expectedImage `json:"images"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			expectedErr = err
			return
		}
		expected = doc.Images
	})
	if expectedErr != nil {
		t.Fatal(expectedErr)
	}
	img, ok := expected[name]
	if !ok {
		t.Fatalf("expected.json has no image %q", name)
	}
	return img
}

func (img expectedImage) top() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: img.MediaType, Digest: img.Digest, Size: img.Size}
}

// blob returns a layout blob's bytes and its descriptor.
func (img expectedImage) blob(t *testing.T, mediaType string, d digest.Digest) ([]byte, ocispec.Descriptor) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(imagesDir, img.Path, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return data, ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// push pushes fixture name to reg as fixture/<name>:1 and returns the
// reference to it.
func push(t *testing.T, reg *registrytest.Registry, name string) (string, expectedImage) {
	t.Helper()
	img := fixture(t, name)
	desc := reg.PushLayout(t, filepath.Join(imagesDir, img.Path), "fixture/"+name+":1")
	if diff := cmp.Diff(img.top(), ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}); diff != "" {
		t.Fatalf("pushed %s (-expected.json +layout):\n%s", name, diff)
	}
	return reg.Host() + "/fixture/" + name + ":1", img
}

// newClient returns a Client; with an empty DockerConfigDir it gets an
// empty one, so the tests never read the user's credentials.
func newClient(t *testing.T, cfg registry.Config) *registry.Client {
	t.Helper()
	if cfg.DockerConfigDir == "" {
		cfg.DockerConfigDir = t.TempDir()
	}
	c, err := registry.New(cfg)
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	return c
}

// wantError describes the *registry.Error a call must fail with.
type wantError struct {
	op        registry.Op
	ref       string
	kind      failure.Kind
	status    int
	temporary bool
	// contains, when set, must be in the message.
	contains string
}

func checkError(t *testing.T, what string, err error, want wantError) *registry.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want an error of kind %d", what, want.kind)
	}
	var rerr *registry.Error
	if !errors.As(err, &rerr) {
		t.Fatalf("%s error %v (%T) is not a *registry.Error", what, err, err)
	}
	got := wantError{op: rerr.Op, ref: rerr.Ref, kind: rerr.Kind, status: rerr.Status, temporary: rerr.Temporary(), contains: want.contains}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(wantError{})); diff != "" {
		t.Errorf("%s error %q (-want +got):\n%s", what, err, diff)
	}
	if want.contains != "" && !strings.Contains(err.Error(), want.contains) {
		t.Errorf("%s error %q does not contain %q", what, err, want.contains)
	}
	return rerr
}

func TestResolve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		image string
		// suffix turns fixture/<image>:1 into the reference to resolve.
		suffix func(img expectedImage) string
	}{
		{name: "single by tag", image: "single", suffix: func(expectedImage) string { return "" }},
		{name: "docker by tag", image: "docker", suffix: func(expectedImage) string { return "" }},
		{name: "multi by tag", image: "multi", suffix: func(expectedImage) string { return "" }},
		{name: "single-zstd by tag", image: "single-zstd", suffix: func(expectedImage) string { return "" }},
		{name: "nolayers by tag", image: "nolayers", suffix: func(expectedImage) string { return "" }},
		{name: "schema1 by tag", image: "schema1", suffix: func(expectedImage) string { return "" }},
		{name: "single by tag and digest", image: "single", suffix: func(img expectedImage) string { return "@" + img.Digest.String() }},
		{name: "multi by tag and digest", image: "multi", suffix: func(img expectedImage) string { return "@" + img.Digest.String() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			ref, img := push(t, reg, tt.image)
			ref += tt.suffix(img)

			got, err := newClient(t, registry.Config{}).Resolve(t.Context(), ref)
			if err != nil {
				t.Fatalf("Resolve(%s): %v", ref, err)
			}
			if diff := cmp.Diff(img.top(), got); diff != "" {
				t.Errorf("Resolve(%s) (-want +got):\n%s", ref, diff)
			}
			// The registry sends Docker-Content-Digest, so HEAD is enough.
			if diff := cmp.Diff(map[string]int{"HEAD manifest": 1}, reg.Counts()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveByDigest(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	_, img := push(t, reg, "multi")
	c := newClient(t, registry.Config{})
	ref := reg.Host() + "/fixture/multi@" + img.Digest.String()
	got, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", ref, err)
	}
	if diff := cmp.Diff(img.top(), got); diff != "" {
		t.Errorf("Resolve(%s) (-want +got):\n%s", ref, diff)
	}

	// A child manifest of the index, by its own digest.
	p := img.Platforms["linux/arm64"]
	ref = reg.Host() + "/fixture/multi@" + p.Manifest.String()
	got, err = c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", ref, err)
	}
	want := ocispec.Descriptor{MediaType: p.ManifestMediaType, Digest: p.Manifest, Size: p.ManifestSize}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Resolve(%s) (-want +got):\n%s", ref, diff)
	}
}

func TestFetchManifest(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	c := newClient(t, registry.Config{})
	type blob struct {
		name      string
		ref       string
		img       expectedImage
		mediaType string
		digest    digest.Digest
		// kind is the request kind containerd must use for it.
		kind string
	}
	var blobs []blob
	for _, name := range []string{"single", "docker", "multi", "single-zstd", "nolayers"} {
		ref, img := push(t, reg, name)
		blobs = append(blobs, blob{name: name + " top", ref: ref, img: img, mediaType: img.MediaType, digest: img.Digest, kind: registrytest.KindManifest})
		for pname, p := range img.Platforms {
			if p.Manifest != img.Digest {
				blobs = append(blobs, blob{name: name + " " + pname + " manifest", ref: ref, img: img, mediaType: p.ManifestMediaType, digest: p.Manifest, kind: registrytest.KindManifest})
			}
			blobs = append(blobs, blob{name: name + " " + pname + " config", ref: ref, img: img, mediaType: p.ConfigMediaType, digest: p.Config, kind: registrytest.KindBlob})
		}
	}
	// Subtests share the registry, so they run one after another and each
	// checks its own requests.
	for _, b := range blobs {
		t.Run(b.name, func(t *testing.T) {
			want, desc := b.img.blob(t, b.mediaType, b.digest)
			reg.Reset()
			got, err := c.FetchManifest(t.Context(), b.ref, desc)
			if err != nil {
				t.Fatalf("FetchManifest(%s): %v", desc.Digest, err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("FetchManifest(%s) bytes (-want +got):\n%s", desc.Digest, diff)
			}
			if diff := cmp.Diff(map[string]int{"GET " + b.kind: 1}, reg.Counts()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchManifestVerifies(t *testing.T) {
	t.Parallel()
	img := fixture(t, "single")
	manifest, top := img.blob(t, img.MediaType, img.Digest)
	other := digest.FromString("some other manifest")

	tests := []struct {
		name string
		// fake, when set, serves the bytes instead of a registrytest
		// registry holding the single fixture.
		fake *fakeRegistry
		desc ocispec.Descriptor
		// contains is in the error message.
		contains string
	}{
		{
			name:     "size one too large",
			desc:     ocispec.Descriptor{MediaType: top.MediaType, Digest: top.Digest, Size: top.Size + 1},
			contains: fmt.Sprintf("got %d bytes, want %d", top.Size, top.Size+1),
		},
		{
			name: "size one too small",
			desc: ocispec.Descriptor{MediaType: top.MediaType, Digest: top.Digest, Size: top.Size - 1},
		},
		{
			name:     "config size too large",
			desc:     ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: img.Platforms["linux/amd64"].Config, Size: 10000},
			contains: "want 10000",
		},
		{
			name:     "wrong digest",
			fake:     &fakeRegistry{body: manifest, mediaType: top.MediaType},
			desc:     ocispec.Descriptor{MediaType: top.MediaType, Digest: other, Size: top.Size},
			contains: "content has digest " + top.Digest.String(),
		},
		{
			name:     "wrong digest for a blob",
			fake:     &fakeRegistry{body: manifest, mediaType: "application/octet-stream"},
			desc:     ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: other, Size: top.Size},
			contains: "content has digest " + top.Digest.String(),
		},
		{
			name:     "wrong digest and size",
			fake:     &fakeRegistry{body: manifest, mediaType: top.MediaType},
			desc:     ocispec.Descriptor{MediaType: top.MediaType, Digest: other, Size: top.Size + 10},
			contains: fmt.Sprintf("got %d bytes", top.Size),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ref string
			if tt.fake != nil {
				ref = tt.fake.start(t) + "/" + fakeRepo + ":1"
			} else {
				reg := registrytest.New(t)
				ref, _ = push(t, reg, "single")
			}
			got, err := newClient(t, registry.Config{}).FetchManifest(t.Context(), ref, tt.desc)
			if got != nil {
				t.Errorf("FetchManifest returned %d bytes with its error", len(got))
			}
			_ = checkError(t, "FetchManifest", err, wantError{op: registry.OpFetch, ref: ref, kind: failure.KindInvalid, contains: tt.contains})
		})
	}
}

func TestResolveTrustsHeaderFetchVerifies(t *testing.T) {
	t.Parallel()
	img := fixture(t, "single")
	manifest, _ := img.blob(t, img.MediaType, img.Digest)
	lie := digest.FromString("not the manifest")
	fake := &fakeRegistry{body: manifest, mediaType: img.MediaType, digestHeader: lie}
	ref := fake.start(t) + "/" + fakeRepo + ":1"
	c := newClient(t, registry.Config{})

	desc, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := ocispec.Descriptor{MediaType: img.MediaType, Digest: lie, Size: img.Size}
	if diff := cmp.Diff(want, desc); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
	_, err = c.FetchManifest(t.Context(), ref, desc)
	_ = checkError(t, "FetchManifest", err, wantError{op: registry.OpFetch, ref: ref, kind: failure.KindInvalid, contains: "content has digest " + img.Digest.String()})
}

func TestResolveWithoutDigestHeader(t *testing.T) {
	t.Parallel()
	img := fixture(t, "multi")
	index, _ := img.blob(t, img.MediaType, img.Digest)
	fake := &fakeRegistry{body: index, mediaType: img.MediaType}
	ref := fake.start(t) + "/" + fakeRepo + ":1"

	got, err := newClient(t, registry.Config{}).Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if diff := cmp.Diff(img.top(), got); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"HEAD /v2/" + fakeRepo + "/manifests/1", "GET /v2/" + fakeRepo + "/manifests/1"}, fake.requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestManifestSizeCap(t *testing.T) {
	t.Parallel()
	const maxBytes = 100
	img := fixture(t, "single")
	if img.Size <= maxBytes {
		t.Fatalf("single's manifest is %d bytes, want more than %d", img.Size, maxBytes)
	}
	manifest, top := img.blob(t, img.MediaType, img.Digest)

	t.Run("resolve", func(t *testing.T) {
		t.Parallel()
		reg := registrytest.New(t)
		ref, _ := push(t, reg, "single")
		_, err := newClient(t, registry.Config{MaxManifestBytes: maxBytes}).Resolve(t.Context(), ref)
		_ = checkError(t, "Resolve", err, wantError{op: registry.OpResolve, ref: ref, kind: failure.KindInvalid, contains: "100-byte cap"})
	})
	t.Run("fetch", func(t *testing.T) {
		t.Parallel()
		reg := registrytest.New(t)
		ref, _ := push(t, reg, "single")
		_, err := newClient(t, registry.Config{MaxManifestBytes: maxBytes}).FetchManifest(t.Context(), ref, top)
		_ = checkError(t, "FetchManifest", err, wantError{op: registry.OpFetch, ref: ref, kind: failure.KindInvalid, contains: "100-byte cap"})
		if n := reg.Count("", ""); n != 0 {
			t.Errorf("FetchManifest made %d requests for a descriptor over the cap, want 0", n)
		}
	})
	t.Run("fetch with a descriptor that understates the size", func(t *testing.T) {
		t.Parallel()
		fake := &fakeRegistry{body: manifest, mediaType: top.MediaType}
		ref := fake.start(t) + "/" + fakeRepo + ":1"
		desc := ocispec.Descriptor{MediaType: top.MediaType, Digest: top.Digest, Size: maxBytes / 2}
		_, err := newClient(t, registry.Config{MaxManifestBytes: maxBytes}).FetchManifest(t.Context(), ref, desc)
		_ = checkError(t, "FetchManifest", err, wantError{op: registry.OpFetch, ref: ref, kind: failure.KindInvalid})
	})
	t.Run("fetch at the cap", func(t *testing.T) {
		t.Parallel()
		reg := registrytest.New(t)
		ref, _ := push(t, reg, "single")
		got, err := newClient(t, registry.Config{MaxManifestBytes: top.Size}).FetchManifest(t.Context(), ref, top)
		if err != nil {
			t.Fatalf("FetchManifest with the cap at the manifest's size: %v", err)
		}
		if string(got) != string(manifest) {
			t.Errorf("FetchManifest = %q, want %q", got, manifest)
		}
	})
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	missing := digest.FromString("missing")
	tests := []struct {
		name string
		op   registry.Op
		call func(t *testing.T, c *registry.Client, host string) (string, error)
	}{
		{name: "resolve missing tag", op: registry.OpResolve, call: func(t *testing.T, c *registry.Client, host string) (string, error) {
			ref := host + "/fixture/single:nope"
			_, err := c.Resolve(t.Context(), ref)
			return ref, err
		}},
		{name: "resolve missing repository", op: registry.OpResolve, call: func(t *testing.T, c *registry.Client, host string) (string, error) {
			ref := host + "/fixture/nothing:1"
			_, err := c.Resolve(t.Context(), ref)
			return ref, err
		}},
		{name: "resolve missing digest", op: registry.OpResolve, call: func(t *testing.T, c *registry.Client, host string) (string, error) {
			ref := host + "/fixture/single@" + missing.String()
			_, err := c.Resolve(t.Context(), ref)
			return ref, err
		}},
		{name: "fetch missing manifest", op: registry.OpFetch, call: func(t *testing.T, c *registry.Client, host string) (string, error) {
			ref := host + "/fixture/single:1"
			_, err := c.FetchManifest(t.Context(), ref, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: missing, Size: 10})
			return ref, err
		}},
		{name: "fetch missing config", op: registry.OpFetch, call: func(t *testing.T, c *registry.Client, host string) (string, error) {
			ref := host + "/fixture/single:1"
			_, err := c.FetchManifest(t.Context(), ref, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: missing, Size: 10})
			return ref, err
		}},
		{name: "open missing layer", op: registry.OpFetch, call: func(t *testing.T, c *registry.Client, host string) (string, error) {
			ref := host + "/fixture/single:1"
			rc, err := c.Open(t.Context(), ref, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: missing, Size: 10})
			if err != nil {
				return ref, err
			}
			defer func() { _ = rc.Close() }()
			_, err = io.ReadAll(rc)
			return ref, err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t)
			push(t, reg, "single")
			ref, err := tt.call(t, newClient(t, registry.Config{}), reg.Host())
			_ = checkError(t, tt.name, err, wantError{op: tt.op, ref: ref, kind: failure.KindNotFound, status: http.StatusNotFound, contains: "not found"})
			if n := reg.Count("", ""); n == 0 {
				t.Errorf("no request reached the registry")
			}
		})
	}
}

// writeDockerConfig writes a config.json with Basic credentials for host
// and returns its directory.
func writeDockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(map[string]any{
		"auths": map[string]any{
			host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// configDir returns the DockerConfigDir for the registry's host;
		// "" means an empty directory.
		configDir func(t *testing.T, host string) string
		ok        bool
	}{
		{name: "no credentials", configDir: func(*testing.T, string) string { return "" }},
		{name: "wrong password", configDir: func(t *testing.T, host string) string { return writeDockerConfig(t, host, "alice", "wrong") }},
		{name: "credentials for another host", configDir: func(t *testing.T, _ string) string {
			return writeDockerConfig(t, "registry.example.com", "alice", "s3cret")
		}},
		{name: "right credentials", configDir: func(t *testing.T, host string) string { return writeDockerConfig(t, host, "alice", "s3cret") }, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t, registrytest.RequireAuth("alice", "s3cret"))
			ref, img := push(t, reg, "multi")
			c := newClient(t, registry.Config{DockerConfigDir: tt.configDir(t, reg.Host())})

			desc, err := c.Resolve(t.Context(), ref)
			if !tt.ok {
				_ = checkError(t, "Resolve", err, wantError{op: registry.OpResolve, ref: ref, kind: failure.KindUnauthorized, status: http.StatusUnauthorized})
				if n := countStatus(reg, http.StatusUnauthorized); n == 0 {
					t.Errorf("the registry answered no request with 401")
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if diff := cmp.Diff(img.top(), desc); diff != "" {
				t.Errorf("Resolve (-want +got):\n%s", diff)
			}
			p := img.Platforms["linux/amd64"]
			want, cdesc := img.blob(t, p.ConfigMediaType, p.Config)
			got, err := c.FetchManifest(t.Context(), ref, cdesc)
			if err != nil {
				t.Fatalf("FetchManifest: %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("FetchManifest = %q, want %q", got, want)
			}
			if n := countStatus(reg, http.StatusOK); n < 2 {
				t.Errorf("%d requests succeeded, want at least 2", n)
			}
		})
	}
}

// countStatus counts the recorded requests answered with status.
func countStatus(reg *registrytest.Registry, status int) int {
	n := 0
	for _, r := range reg.Requests() {
		if r.Status == status {
			n++
		}
	}
	return n
}

// operation is one Client call against the single fixture in reg; it
// returns the reference it used and the call's error.
type operation struct {
	name string
	op   registry.Op
	// kind is the kind of request a fault rule must match.
	kind string
	call func(t *testing.T, c *registry.Client, ref string, img expectedImage) error
}

var operations = []operation{
	{name: "resolve", op: registry.OpResolve, kind: registrytest.KindManifest, call: func(t *testing.T, c *registry.Client, ref string, _ expectedImage) error {
		_, err := c.Resolve(t.Context(), ref)
		return err
	}},
	{name: "fetch manifest", op: registry.OpFetch, kind: registrytest.KindManifest, call: func(t *testing.T, c *registry.Client, ref string, img expectedImage) error {
		_, err := c.FetchManifest(t.Context(), ref, img.top())
		return err
	}},
	{name: "fetch config", op: registry.OpFetch, kind: registrytest.KindBlob, call: func(t *testing.T, c *registry.Client, ref string, img expectedImage) error {
		p := img.Platforms["linux/amd64"]
		_, desc := img.blob(t, p.ConfigMediaType, p.Config)
		_, err := c.FetchManifest(t.Context(), ref, desc)
		return err
	}},
	{name: "open layer", op: registry.OpFetch, kind: registrytest.KindBlob, call: func(t *testing.T, c *registry.Client, ref string, img expectedImage) error {
		p := img.Platforms["linux/amd64"]
		_, desc := img.blob(t, p.LayerMediaTypes[0], p.Layers[0])
		rc, err := c.Open(t.Context(), ref, desc)
		if err != nil {
			return err
		}
		defer func() { _ = rc.Close() }()
		_, err = io.ReadAll(rc)
		return err
	}},
}

func TestStatusErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status    int
		kind      failure.Kind
		temporary bool
	}{
		{status: http.StatusBadRequest, kind: failure.KindInvalid},
		{status: http.StatusForbidden, kind: failure.KindUnauthorized},
		{status: http.StatusNotFound, kind: failure.KindNotFound},
		{status: http.StatusRequestTimeout, kind: failure.KindUnavailable, temporary: true},
		{status: http.StatusTooManyRequests, kind: failure.KindUnavailable, temporary: true},
		{status: http.StatusInternalServerError, kind: failure.KindUnavailable, temporary: true},
		{status: http.StatusBadGateway, kind: failure.KindUnavailable, temporary: true},
		{status: http.StatusServiceUnavailable, kind: failure.KindUnavailable, temporary: true},
	}
	for _, tt := range tests {
		for _, o := range operations {
			t.Run(fmt.Sprintf("%d %s", tt.status, o.name), func(t *testing.T) {
				t.Parallel()
				reg := registrytest.New(t)
				ref, img := push(t, reg, "single")
				reg.Fail(registrytest.FailRule{Kind: o.kind, Status: tt.status, Times: -1})

				err := o.call(t, newClient(t, registry.Config{}), ref, img)
				_ = checkError(t, o.name, err, wantError{op: o.op, ref: ref, kind: tt.kind, status: tt.status, temporary: tt.temporary})
				if n := countStatus(reg, tt.status); n == 0 {
					t.Errorf("the registry answered no request with %d", tt.status)
				}
			})
		}
	}
}

func TestTransientStatusIsRetried(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	ref, img := push(t, reg, "single")
	reg.Fail(registrytest.FailRule{Kind: registrytest.KindManifest, Status: http.StatusServiceUnavailable})

	got, err := newClient(t, registry.Config{}).Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("Resolve after one 503: %v", err)
	}
	if diff := cmp.Diff(img.top(), got); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{http.StatusServiceUnavailable, http.StatusOK}, statuses(reg)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

func statuses(reg *registrytest.Registry) []int {
	var out []int
	for _, r := range reg.Requests() {
		out = append(out, r.Status)
	}
	return out
}

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	img := fixture(t, "single")
	for _, o := range operations {
		t.Run(o.name, func(t *testing.T) {
			t.Parallel()
			ref := closedPort(t) + "/fixture/single:1"
			err := o.call(t, newClient(t, registry.Config{}), ref, img)
			// Nothing listens there: retrying cannot help.
			_ = checkError(t, o.name, err, wantError{op: o.op, ref: ref, kind: failure.KindUnreachable, temporary: false})
			if !errors.Is(err, failure.ErrUnreachable) || !failure.Permanent(err) {
				t.Errorf("%s error %v is not failure.ErrUnreachable, permanent", o.name, err)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s error %v is not ECONNREFUSED", o.name, err)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t, registrytest.WithLatency(time.Minute))
	ref, _ := push(t, reg, "single")
	c := newClient(t, registry.Config{Timeout: 100 * time.Millisecond})

	start := time.Now()
	_, err := c.Resolve(t.Context(), ref)
	_ = checkError(t, "Resolve", err, wantError{op: registry.OpResolve, ref: ref, kind: failure.KindUnavailable, temporary: true})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Resolve took %v with a 100ms timeout", d)
	}
}

func TestBadReference(t *testing.T) {
	t.Parallel()
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("x"), Size: 1}
	tests := []struct {
		name string
		op   registry.Op
		ref  string
		call func(t *testing.T, c *registry.Client, ref string) error
	}{
		{name: "resolve with a space in the host", op: registry.OpResolve, ref: "bad host/a:1", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.Resolve(t.Context(), ref)
			return err
		}},
		{name: "resolve with a scheme", op: registry.OpResolve, ref: "http://127.0.0.1:1/a:1", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.Resolve(t.Context(), ref)
			return err
		}},
		{name: "resolve with a short digest", op: registry.OpResolve, ref: "127.0.0.1:1/a@sha256:abc", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.Resolve(t.Context(), ref)
			return err
		}},
		{name: "fetch with a space in the host", op: registry.OpFetch, ref: "bad host/a:1", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.FetchManifest(t.Context(), ref, desc)
			return err
		}},
		{name: "open with a space in the host", op: registry.OpFetch, ref: "bad host/a:1", call: func(t *testing.T, c *registry.Client, ref string) error {
			_, err := c.Open(t.Context(), ref, desc)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call(t, newClient(t, registry.Config{}), tt.ref)
			_ = checkError(t, tt.name, err, wantError{op: tt.op, ref: tt.ref, kind: failure.KindInvalid, contains: "bad reference"})
		})
	}
}

func TestNegativeSize(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	ref, img := push(t, reg, "single")
	desc := img.top()
	desc.Size = -1
	_, err := newClient(t, registry.Config{}).FetchManifest(t.Context(), ref, desc)
	_ = checkError(t, "FetchManifest", err, wantError{op: registry.OpFetch, ref: ref, kind: failure.KindInvalid})
}

func TestOpen(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	ref, img := push(t, reg, "single")
	c := newClient(t, registry.Config{})
	p := img.Platforms["linux/amd64"]
	for i, l := range p.Layers {
		t.Run(fmt.Sprint("layer ", i), func(t *testing.T) {
			want, desc := img.blob(t, p.LayerMediaTypes[i], l)
			reg.Reset()
			rc, err := c.Open(t.Context(), ref, desc)
			if err != nil {
				t.Fatalf("Open(%s): %v", l, err)
			}
			got, err := io.ReadAll(rc)
			if cerr := rc.Close(); cerr != nil {
				t.Errorf("Close: %v", cerr)
			}
			if err != nil {
				t.Fatalf("read %s: %v", l, err)
			}
			if d := digest.FromBytes(got); d != l {
				t.Errorf("Open(%s) streamed %d bytes with digest %s", l, len(got), d)
			}
			if string(got) != string(want) {
				t.Errorf("Open(%s) bytes differ from the layout's", l)
			}
			if diff := cmp.Diff(map[string]int{"GET blob": 1}, reg.Counts()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

// A blob of unknown size (negative) is sized with a HEAD first, in the
// reference's repository whatever digest the reference names; a missing one
// fails Open with not found.
func TestOpenUnknownSize(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := bytes.Repeat([]byte("a blob of unknown size\n"), 1000)
	d := reg.PushBlob(t, "blobs/any", data)
	c := newClient(t, registry.Config{MaxManifestBytes: 1024})
	for _, ref := range []string{reg.Host() + "/blobs/any@" + d.String(), reg.Host() + "/blobs/any:tag"} {
		rc, err := c.Open(t.Context(), ref, ocispec.Descriptor{Digest: d, Size: -1})
		if err != nil {
			t.Fatalf("Open(%s): %v", ref, err)
		}
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("Open(%s) read %d bytes, %v", ref, len(got), err)
		}
	}
	missing := digest.FromString("missing")
	_, err := c.Open(t.Context(), reg.Host()+"/blobs/any@"+missing.String(), ocispec.Descriptor{Digest: missing, Size: -1})
	_ = checkError(t, "Open", err, wantError{op: registry.OpResolve, ref: reg.Host() + "/blobs/any@" + missing.String(), kind: failure.KindNotFound, status: http.StatusNotFound})
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t, registrytest.RequireAuth("alice", "s3cret"))
	ref, img := push(t, reg, "multi")
	c := newClient(t, registry.Config{DockerConfigDir: writeDockerConfig(t, reg.Host(), "alice", "s3cret")})

	const workers = 8
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			desc, err := c.Resolve(t.Context(), ref)
			if err != nil {
				errs <- err
				return
			}
			if desc.Digest != img.Digest {
				errs <- fmt.Errorf("resolved %s, want %s", desc.Digest, img.Digest)
				return
			}
			for _, p := range img.Platforms {
				m := ocispec.Descriptor{MediaType: p.ManifestMediaType, Digest: p.Manifest, Size: p.ManifestSize}
				if _, err := c.FetchManifest(t.Context(), ref, m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := reg.Count(http.MethodGet, registrytest.KindManifest); n != workers*len(img.Platforms) {
		t.Errorf("%d manifest GETs, want %d", n, workers*len(img.Platforms))
	}
}

// fakeRepo is the one repository a fakeRegistry serves.
const fakeRepo = "test/img"

// fakeRegistry answers /v2/ and every manifest or blob request of fakeRepo
// with body, whatever tag or digest the path names: a registry that serves
// the wrong bytes. It sends Content-Type mediaType, a Content-Length, and
// Docker-Content-Digest only when digestHeader is set.
type fakeRegistry struct {
	body         []byte
	mediaType    string
	digestHeader digest.Digest

	mu  sync.Mutex
	log []string
}

// start serves f on 127.0.0.1 until the test ends and returns its host.
func (f *fakeRegistry) start(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/v2/"+fakeRepo+"/manifests/") && !strings.HasPrefix(r.URL.Path, "/v2/"+fakeRepo+"/blobs/") {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		f.log = append(f.log, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		w.Header().Set("Content-Type", f.mediaType)
		w.Header().Set("Content-Length", fmt.Sprint(len(f.body)))
		if f.digestHeader != "" {
			w.Header().Set("Docker-Content-Digest", f.digestHeader.String())
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(f.body)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// requests returns "METHOD path" for every manifest or blob request.
func (f *fakeRegistry) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// A blob that keeps arriving may take longer than the timeout; one whose
// body stops arriving fails after about the timeout instead of hanging.
func TestBodyStall(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := make([]byte, 128<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	d := reg.PushBlob(t, "stall/blob", data)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(data))}
	ref := reg.Host() + "/stall/blob:latest"
	// The timeout is fifteen times the steady gap, so a busy machine's
	// scheduling cannot pass for a stall.
	const timeout = 1500 * time.Millisecond
	c := newClient(t, registry.Config{Timeout: timeout})

	// 4 KiB every 100ms: 3.2s in all, never a pause near the timeout.
	reg.ThrottleBlobs(40 << 10)
	start := time.Now()
	rc, err := c.Open(t.Context(), ref, desc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		t.Fatalf("a steady blob taking %v failed: %v", time.Since(start), err)
	}
	if digest.FromBytes(got) != d {
		t.Fatal("steady blob: wrong content")
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("the steady blob took %v, less than the timeout: the test proves nothing", took)
	}

	// 4 KiB, then nothing for an hour.
	reg.ThrottleBlobs(1)
	start = time.Now()
	rc, err = c.Open(t.Context(), ref, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	_, err = io.ReadAll(rc)
	_ = checkError(t, "read a stalled blob", err, wantError{op: registry.OpFetch, ref: ref, kind: failure.KindUnavailable, temporary: true})
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a stalled read failed after %v with a %v timeout", took, timeout)
	}
}

// A registry error matches the failure class of its kind, so services need no
// mapping of their own.
func TestErrorClasses(t *testing.T) {
	t.Parallel()
	for kind, want := range map[failure.Kind]error{
		failure.KindNotFound:     failure.ErrNotFound,
		failure.KindUnauthorized: failure.ErrUnauthorized,
		failure.KindInvalid:      failure.ErrInvalid,
		failure.KindUnavailable:  failure.ErrUnavailable,
	} {
		err := fmt.Errorf("pull: %w", &registry.Error{Kind: kind, Err: errors.New("x")})
		if !errors.Is(err, want) {
			t.Errorf("kind %d does not match %v", kind, want)
		}
		for _, other := range []error{failure.ErrNotFound, failure.ErrUnauthorized, failure.ErrInvalid, failure.ErrUnavailable} {
			if !errors.Is(other, want) && errors.Is(err, other) {
				t.Errorf("kind %d also matches %v", kind, other)
			}
		}
		if got, permanent := failure.Permanent(err), kind != failure.KindUnavailable; got != permanent {
			t.Errorf("kind %d: Permanent = %v", kind, got)
		}
	}
}
