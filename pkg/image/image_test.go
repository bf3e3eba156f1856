package image_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/image"
)

// imagesDir holds the fixture layouts and expected.json (see its README).
const imagesDir = "../../testdata/images"

// Media types the tests build descriptors with.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeSchema1Signed  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	mediaTypeSchema1        = "application/vnd.docker.distribution.manifest.v1+json"
)

type expectedPlatform struct {
	Manifest          digest.Digest     `json:"manifest"`
	ManifestMediaType string            `json:"manifest_media_type"`
	ManifestSize      int64             `json:"manifest_size"`
	Config            digest.Digest     `json:"config"`
	ConfigMediaType   string            `json:"config_media_type"`
	Layers            []digest.Digest   `json:"layers"`
	LayerMediaTypes   []string          `json:"layer_media_types"`
	DiffIDs           []digest.Digest   `json:"diff_ids"`
	IndexPlatform     *ocispec.Platform `json:"index_platform"`
}

type expectedImage struct {
	Path      string                      `json:"path"`
	MediaType string                      `json:"media_type"`
	Digest    digest.Digest               `json:"digest"`
	Size      int64                       `json:"size"`
	Reject    string                      `json:"reject"`
	Platforms map[string]expectedPlatform `json:"platforms"`
}

var (
	expectedOnce sync.Once
	expected     map[string]expectedImage
	expectedErr  error
)

// loadExpected reads testdata/images/expected.json once per test binary.
func loadExpected(t *testing.T) map[string]expectedImage {
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
		if len(doc.Images) == 0 {
			expectedErr = errors.New("expected.json lists no images")
			return
		}
		expected = doc.Images
	})
	if expectedErr != nil {
		t.Fatal(expectedErr)
	}
	return expected
}

// errNoBlob is what a blobStore answers for a digest it does not hold.
var errNoBlob = errors.New("blob unknown")

// blobStore answers FetchManifest like a registry would: from an OCI
// layout's blobs/sha256 directory, or from blobs added in memory, checking
// the content against the descriptor's size and digest. It records every
// digest it is asked for.
type blobStore struct {
	dir string // layout directory; empty means memory only

	mu    sync.Mutex
	extra map[digest.Digest][]byte
	asked []digest.Digest
}

func newStore(layout string) *blobStore {
	s := &blobStore{extra: map[digest.Digest][]byte{}}
	if layout != "" {
		s.dir = filepath.Join(imagesDir, layout)
	}
	return s
}

// add stores data in memory and returns its descriptor.
func (s *blobStore) add(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra[d] = data
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// addJSON stores v, marshalled, in memory and returns its descriptor.
func (s *blobStore) addJSON(t *testing.T, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return s.add(mediaType, data)
}

func (s *blobStore) fetch(_ context.Context, desc ocispec.Descriptor) ([]byte, error) {
	s.mu.Lock()
	s.asked = append(s.asked, desc.Digest)
	data, ok := s.extra[desc.Digest]
	s.mu.Unlock()
	if err := desc.Digest.Validate(); err != nil {
		return nil, err
	}
	if !ok {
		if s.dir == "" {
			return nil, fmt.Errorf("%s: %w", desc.Digest, errNoBlob)
		}
		var err error
		data, err = os.ReadFile(filepath.Join(s.dir, ocispec.ImageBlobsDir, desc.Digest.Algorithm().String(), desc.Digest.Encoded()))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", desc.Digest, errNoBlob)
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(data)) != desc.Size {
		return nil, fmt.Errorf("%s: got %d bytes, descriptor says %d", desc.Digest, len(data), desc.Size)
	}
	if got := desc.Digest.Algorithm().FromBytes(data); got != desc.Digest {
		return nil, fmt.Errorf("%s: content has digest %s", desc.Digest, got)
	}
	return data, nil
}

func (s *blobStore) fetcher() image.FetcherFunc { return s.fetch }

// fetched returns the digests asked for so far, in order.
func (s *blobStore) fetched() []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]digest.Digest(nil), s.asked...)
}

// blobSize returns the size of a layout blob on disk.
func blobSize(t *testing.T, layout string, d digest.Digest) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(imagesDir, layout, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// readBlob returns a layout blob's bytes.
func readBlob(t *testing.T, layout string, d digest.Digest) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(imagesDir, layout, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// topDescriptor is the image's top-level descriptor as expected.json has it.
func topDescriptor(img expectedImage) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: img.MediaType, Digest: img.Digest, Size: img.Size}
}

// wantCacheOpts builds the CacheOpts Walk must return for one image and
// platform from expected.json and the layout's blob sizes. The manifest
// descriptor of an index entry keeps the entry's platform.
func wantCacheOpts(t *testing.T, img expectedImage, p expectedPlatform, platform ocispec.Platform) events.CacheOpts {
	t.Helper()
	if len(p.Layers) != len(p.DiffIDs) || len(p.Layers) != len(p.LayerMediaTypes) {
		t.Fatalf("expected.json: %d layers, %d media types, %d diff_ids", len(p.Layers), len(p.LayerMediaTypes), len(p.DiffIDs))
	}
	want := events.CacheOpts{
		Top:        topDescriptor(img),
		Manifest:   ocispec.Descriptor{MediaType: p.ManifestMediaType, Digest: p.Manifest, Size: p.ManifestSize, Platform: p.IndexPlatform},
		Config:     ocispec.Descriptor{MediaType: p.ConfigMediaType, Digest: p.Config, Size: blobSize(t, img.Path, p.Config)},
		RootFSType: "layers",
		Platform:   platform,
	}
	for i, l := range p.Layers {
		want.Layers = append(want.Layers, events.Layer{
			Blob:   ocispec.Descriptor{MediaType: p.LayerMediaTypes[i], Digest: l, Size: blobSize(t, img.Path, l)},
			DiffID: p.DiffIDs[i],
		})
	}
	return want
}

func TestWalkFixtures(t *testing.T) {
	t.Parallel()
	images := loadExpected(t)
	linux := func(arch, variant string) ocispec.Platform {
		return ocispec.Platform{OS: "linux", Architecture: arch, Variant: variant}
	}
	tests := []struct {
		name     string
		image    string
		key      string // platform entry in expected.json
		platform ocispec.Platform
		// index says whether the top-level descriptor is an index, fetched
		// before the manifest.
		index bool
	}{
		{name: "single", image: "single", key: "linux/amd64", platform: linux("amd64", "")},
		{name: "single-retag", image: "single-retag", key: "linux/amd64", platform: linux("amd64", "")},
		{name: "single-zstd", image: "single-zstd", key: "linux/amd64", platform: linux("amd64", "")},
		{name: "docker", image: "docker", key: "linux/amd64", platform: linux("amd64", "")},
		{name: "nolayers", image: "nolayers", key: "linux/amd64", platform: linux("amd64", "")},
		{name: "buildkit-base", image: "buildkit-base", key: "linux/amd64", platform: linux("amd64", "")},
		{name: "multi amd64", image: "multi", key: "linux/amd64", platform: linux("amd64", ""), index: true},
		{name: "multi arm64 picks variant v8", image: "multi", key: "linux/arm64", platform: linux("arm64", ""), index: true},
		{name: "multi arm64/v8", image: "multi", key: "linux/arm64", platform: linux("arm64", "v8"), index: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img, ok := images[tt.image]
			if !ok {
				t.Fatalf("expected.json has no image %q", tt.image)
			}
			p, ok := img.Platforms[tt.key]
			if !ok {
				t.Fatalf("expected.json: %s has no platform %q", tt.image, tt.key)
			}
			s := newStore(img.Path)

			got, err := image.Walk(t.Context(), s.fetcher(), topDescriptor(img), tt.platform)
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			want := wantCacheOpts(t, img, p, tt.platform)
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Walk CacheOpts (-want +got):\n%s", diff)
			}

			wantFetched := []digest.Digest{p.Manifest, p.Config}
			if tt.index {
				wantFetched = append([]digest.Digest{img.Digest}, wantFetched...)
			}
			if diff := cmp.Diff(wantFetched, s.fetched()); diff != "" {
				t.Errorf("fetched digests (-want +got):\n%s", diff)
			}
			for _, l := range p.Layers {
				for _, d := range s.fetched() {
					if d == l {
						t.Errorf("Walk fetched layer %s", l)
					}
				}
			}
		})
	}
}

func TestWalkIndexPlatforms(t *testing.T) {
	t.Parallel()
	// The multi fixture's index must really say variant v8 for arm64,
	// otherwise "picks variant v8" above proves nothing.
	multi := loadExpected(t)["multi"]
	want := &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if diff := cmp.Diff(want, multi.Platforms["linux/arm64"].IndexPlatform); diff != "" {
		t.Errorf("multi linux/arm64 index platform (-want +got):\n%s", diff)
	}
	if multi.Platforms["linux/arm64"].Manifest == multi.Platforms["linux/amd64"].Manifest {
		t.Errorf("multi: amd64 and arm64 share manifest %s", multi.Platforms["linux/amd64"].Manifest)
	}
}

func TestWalkNoLayers(t *testing.T) {
	t.Parallel()
	img := loadExpected(t)["nolayers"]
	got, err := image.Walk(t.Context(), newStore(img.Path).fetcher(), topDescriptor(img), ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if len(got.Layers) != 0 {
		t.Errorf("Walk Layers = %v, want none", got.Layers)
	}
	if got.RootFSType != "layers" {
		t.Errorf("Walk RootFSType = %q, want %q", got.RootFSType, "layers")
	}
}

func TestWalkNoPlatform(t *testing.T) {
	t.Parallel()
	img := loadExpected(t)["multi"]
	s := newStore(img.Path)
	_, err := image.Walk(t.Context(), s.fetcher(), topDescriptor(img), ocispec.Platform{OS: "linux", Architecture: "s390x"})
	if !errors.Is(err, image.ErrNoPlatform) {
		t.Fatalf("Walk error = %v, want ErrNoPlatform", err)
	}
	if errors.Is(err, image.ErrInvalid) {
		t.Errorf("Walk error %v is also ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("Walk error %q does not name the platform linux/s390x", err)
	}
	if diff := cmp.Diff([]digest.Digest{img.Digest}, s.fetched()); diff != "" {
		t.Errorf("fetched digests (-want +got):\n%s", diff)
	}
}

// invalidCase is one Walk that must fail with ErrInvalid.
type invalidCase struct {
	name string
	// setup fills the store and returns the top-level descriptor.
	setup func(t *testing.T, s *blobStore) ocispec.Descriptor
	// layout is the store's layout directory ("" for memory only).
	layout string
	// exact, when set, is the whole error text; prefix is checked otherwise.
	exact, prefix string
	// fetched is every digest Walk may ask for, in order.
	fetched func(top ocispec.Descriptor) []digest.Digest
}

func TestWalkInvalid(t *testing.T) {
	t.Parallel()
	images := loadExpected(t)
	single := images["single"]
	singleP := single.Platforms["linux/amd64"]
	schema1 := images["schema1"]
	if schema1.Reject != "schema1" || schema1.MediaType != mediaTypeSchema1Signed {
		t.Fatalf("expected.json: schema1 is %q with reject %q", schema1.MediaType, schema1.Reject)
	}
	schema1Bytes := readBlob(t, schema1.Path, schema1.Digest)
	singleConfig := readBlob(t, single.Path, singleP.Config)

	// fakeLayer is a layer descriptor whose blob exists nowhere: fetching
	// it fails the walk with errNoBlob.
	fakeLayer := func(n int) ocispec.Descriptor {
		return ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageLayerGzip,
			Digest:    digest.FromString(fmt.Sprintf("layer %d", n)),
			Size:      int64(100 + n),
		}
	}
	manifest := func(config ocispec.Descriptor, layers ...ocispec.Descriptor) ocispec.Manifest {
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: layers}
		m.SchemaVersion = 2
		return m
	}
	configWithDiffIDs := func(n int) ocispec.Image {
		cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}
		cfg.RootFS.Type = "layers"
		for i := range n {
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromString(fmt.Sprintf("diff %d", i)))
		}
		return cfg
	}
	indexOf := func(entries ...ocispec.Descriptor) ocispec.Index {
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: entries}
		idx.SchemaVersion = 2
		return idx
	}
	withPlatform := func(d ocispec.Descriptor, arch string) ocispec.Descriptor {
		d.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
		return d
	}
	none := func(ocispec.Descriptor) []digest.Digest { return nil }
	topOnly := func(top ocispec.Descriptor) []digest.Digest { return []digest.Digest{top.Digest} }

	var (
		// Filled by setups that need more than the top digest in fetched.
		mu      sync.Mutex
		configs = map[digest.Digest]digest.Digest{} // manifest digest -> config digest
	)
	rememberConfig := func(m, c ocispec.Descriptor) {
		mu.Lock()
		defer mu.Unlock()
		configs[m.Digest] = c.Digest
	}
	topAndConfig := func(top ocispec.Descriptor) []digest.Digest {
		mu.Lock()
		defer mu.Unlock()
		return []digest.Digest{top.Digest, configs[top.Digest]}
	}

	tests := []invalidCase{
		{
			name:    "schema1 top-level manifest",
			layout:  schema1.Path,
			setup:   func(*testing.T, *blobStore) ocispec.Descriptor { return topDescriptor(schema1) },
			exact:   image.Schema1Error,
			fetched: none,
		},
		{
			name: "schema1 unsigned media type",
			setup: func(_ *testing.T, s *blobStore) ocispec.Descriptor {
				return s.add(mediaTypeSchema1, schema1Bytes)
			},
			exact:   image.Schema1Error,
			fetched: none,
		},
		{
			name: "index entry for the platform is schema1",
			setup: func(t *testing.T, s *blobStore) ocispec.Descriptor {
				good := s.addJSON(t, ocispec.MediaTypeImageManifest, manifest(s.add(ocispec.MediaTypeImageConfig, singleConfig)))
				bad := s.add(mediaTypeSchema1Signed, schema1Bytes)
				return s.addJSON(t, ocispec.MediaTypeImageIndex, indexOf(withPlatform(good, "arm64"), withPlatform(bad, "amd64")))
			},
			exact:   image.Schema1Error,
			fetched: topOnly,
		},
		{
			name: "manifest media type with schema 1 content",
			setup: func(_ *testing.T, s *blobStore) ocispec.Descriptor {
				return s.add(mediaTypeDockerManifest, schema1Bytes)
			},
			exact:   image.Schema1Error,
			fetched: topOnly,
		},
		{
			name: "diff_ids count differs from layers",
			setup: func(t *testing.T, s *blobStore) ocispec.Descriptor {
				cfg := s.addJSON(t, ocispec.MediaTypeImageConfig, configWithDiffIDs(1))
				top := s.addJSON(t, ocispec.MediaTypeImageManifest, manifest(cfg, fakeLayer(0), fakeLayer(1)))
				rememberConfig(top, cfg)
				return top
			},
			prefix:  "mismatched image rootfs and manifest layers",
			fetched: topAndConfig,
		},
		{
			name: "more diff_ids than layers",
			setup: func(t *testing.T, s *blobStore) ocispec.Descriptor {
				cfg := s.addJSON(t, ocispec.MediaTypeImageConfig, configWithDiffIDs(3))
				top := s.addJSON(t, ocispec.MediaTypeImageManifest, manifest(cfg, fakeLayer(0)))
				rememberConfig(top, cfg)
				return top
			},
			prefix:  "mismatched image rootfs and manifest layers",
			fetched: topAndConfig,
		},
		{
			name: "config is not JSON",
			setup: func(t *testing.T, s *blobStore) ocispec.Descriptor {
				cfg := s.add(ocispec.MediaTypeImageConfig, []byte("this is not json"))
				top := s.addJSON(t, ocispec.MediaTypeImageManifest, manifest(cfg, fakeLayer(0)))
				rememberConfig(top, cfg)
				return top
			},
			prefix:  "failed to parse image config",
			fetched: topAndConfig,
		},
		{
			name: "manifest is not JSON",
			setup: func(_ *testing.T, s *blobStore) ocispec.Descriptor {
				return s.add(ocispec.MediaTypeImageManifest, []byte("{not json"))
			},
			prefix:  "manifest sha256:",
			fetched: topOnly,
		},
		{
			name: "index is not JSON",
			setup: func(_ *testing.T, s *blobStore) ocispec.Descriptor {
				return s.add(ocispec.MediaTypeImageIndex, []byte("[1, 2"))
			},
			prefix:  "sha256:",
			fetched: topOnly,
		},
		{
			name:   "unknown top-level media type",
			layout: single.Path,
			setup: func(t *testing.T, _ *blobStore) ocispec.Descriptor {
				// A real layer blob: Walk must refuse it without reading it.
				return ocispec.Descriptor{MediaType: singleP.LayerMediaTypes[0], Digest: singleP.Layers[0], Size: blobSize(t, single.Path, singleP.Layers[0])}
			},
			prefix:  "sha256:",
			fetched: none,
		},
		{
			name: "config media type as top level",
			setup: func(_ *testing.T, s *blobStore) ocispec.Descriptor {
				return s.add(ocispec.MediaTypeImageConfig, singleConfig)
			},
			prefix:  "sha256:",
			fetched: none,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(tt.layout)
			top := tt.setup(t, s)

			got, err := image.Walk(t.Context(), s.fetcher(), top, ocispec.Platform{OS: "linux", Architecture: "amd64"})
			if err == nil {
				t.Fatalf("Walk succeeded with %+v, want ErrInvalid", got)
			}
			if !errors.Is(err, image.ErrInvalid) {
				t.Errorf("Walk error %v is not ErrInvalid", err)
			}
			if errors.Is(err, image.ErrNoPlatform) || errors.Is(err, errNoBlob) {
				t.Errorf("Walk error %v is misclassified", err)
			}
			var ierr *image.Error
			if !errors.As(err, &ierr) {
				t.Errorf("Walk error %v (%T) is not an *image.Error", err, err)
			}
			if tt.exact != "" && err.Error() != tt.exact {
				t.Errorf("Walk error = %q, want %q", err, tt.exact)
			}
			if tt.prefix != "" && !strings.HasPrefix(err.Error(), tt.prefix) {
				t.Errorf("Walk error = %q, want it to start with %q", err, tt.prefix)
			}
			if diff := cmp.Diff(tt.fetched(top), s.fetched(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("fetched digests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWalkMismatchMessage(t *testing.T) {
	t.Parallel()
	s := newStore("")
	cfg := ocispec.Image{}
	cfg.RootFS = ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString("a")}}
	cdesc := s.addJSON(t, ocispec.MediaTypeImageConfig, cfg)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cdesc, Layers: []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("l0"), Size: 1},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("l1"), Size: 1},
	}}
	m.SchemaVersion = 2
	top := s.addJSON(t, ocispec.MediaTypeImageManifest, m)

	_, err := image.Walk(t.Context(), s.fetcher(), top, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	const want = "mismatched image rootfs and manifest layers: 1 diff_ids, 2 layers"
	if err == nil || err.Error() != want {
		t.Fatalf("Walk error = %v, want %q", err, want)
	}
}

func TestWalkReturnsFetcherError(t *testing.T) {
	t.Parallel()
	img := loadExpected(t)["multi"]
	p := img.Platforms["linux/amd64"]
	errFetch := errors.New("registry is down")
	tests := []struct {
		name   string
		failOn digest.Digest
	}{
		{name: "index", failOn: img.Digest},
		{name: "manifest", failOn: p.Manifest},
		{name: "config", failOn: p.Config},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(img.Path)
			f := image.FetcherFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
				if desc.Digest == tt.failOn {
					return nil, fmt.Errorf("fetch %s: %w", desc.Digest, errFetch)
				}
				return s.fetch(ctx, desc)
			})
			_, err := image.Walk(t.Context(), f, topDescriptor(img), ocispec.Platform{OS: "linux", Architecture: "amd64"})
			if !errors.Is(err, errFetch) {
				t.Fatalf("Walk error = %v, want the fetcher's error", err)
			}
			if errors.Is(err, image.ErrInvalid) || errors.Is(err, image.ErrNoPlatform) {
				t.Errorf("Walk error %v is classified as the image's fault", err)
			}
			if want := fmt.Sprintf("fetch %s: %s", tt.failOn, errFetch); err.Error() != want {
				t.Errorf("Walk error = %q, want %q unchanged", err, want)
			}
		})
	}
}

func TestWalkVerifyingFetcherError(t *testing.T) {
	t.Parallel()
	// A manifest whose config descriptor has the wrong size: the fetcher
	// refuses it and Walk passes that on.
	img := loadExpected(t)["single"]
	p := img.Platforms["linux/amd64"]
	s := newStore(img.Path)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{
		MediaType: p.ConfigMediaType, Digest: p.Config, Size: blobSize(t, img.Path, p.Config) + 1,
	}}
	m.SchemaVersion = 2
	top := s.addJSON(t, ocispec.MediaTypeImageManifest, m)
	_, err := image.Walk(t.Context(), s.fetcher(), top, ocispec.Platform{OS: "linux", Architecture: "amd64"})
	if err == nil || !strings.Contains(err.Error(), "descriptor says") {
		t.Fatalf("Walk error = %v, want the fetcher's size check", err)
	}
	if errors.Is(err, image.ErrInvalid) {
		t.Errorf("Walk error %v is ErrInvalid, want the fetcher's own error", err)
	}
}
