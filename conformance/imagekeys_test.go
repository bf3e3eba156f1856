package conformance

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/moby/buildkit/snapshot/containerd"
	"github.com/moby/buildkit/solver/pb"
	bkimage "github.com/moby/buildkit/source/containerimage"
	"github.com/moby/buildkit/util/leaseutil"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// dockerManifestList is the media type of a Docker manifest list.
const dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"

// buildkitImageSource is BuildKit's docker-image source with the least of
// a worker its CacheKey uses: a content store and a lease manager over a
// containerd metadata database (as BuildKit's runc worker makes them, in
// the "buildkit" namespace), and registry hosts that reach every registry
// over plain http. No snapshotter, cache manager or session: CacheKey
// fetches the manifests and the config into the content store and never
// touches the layers.
func buildkitImageSource(t *testing.T) *bkimage.Source {
	t.Helper()
	dir := t.TempDir()
	store, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "containerdmeta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	mdb := metadata.NewDB(db, store, nil)
	if err := mdb.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	src, err := bkimage.NewSource(bkimage.SourceOpt{
		ContentStore:  containerd.NewContentStore(mdb.ContentStore(), "buildkit"),
		LeaseManager:  leaseutil.WithNamespace(metadata.NewLeaseManager(mdb), "buildkit"),
		RegistryHosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// Image keys (index 0) are BuildKit's: BuildKit v0.34.1's docker-image
// source (Identifier, Resolve, CacheKey against the registry) and a
// fleet's puller resolve the same references, with the same platform and
// attributes, against one in-test registry holding the fixture images and
// two indexes made from the multi-platform fixture's manifests: a Docker
// manifest list and an OCI index whose arm64 entry is linux/arm64/v8.
//
// BuildKit v0.34.1 computes one key per image (done at index 0): it no
// longer keys an image by its config's diff_ids. Only index 0 is compared.
func TestImageKeysAreBuildKits(t *testing.T) {
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	host := s.Registry.Host()
	for _, name := range []string{"single", "single-zstd", "docker", "multi"} {
		s.Push(t, name, "fixture/"+name+":1")
	}
	// The indexes: the multi fixture's, with its arm64 entry marked v8,
	// as an OCI index and as a Docker manifest list.
	var index ocispec.Index
	if err := json.Unmarshal(layoutBlob(t, "multi", fx.Images["multi"].Digest), &index); err != nil {
		t.Fatal(err)
	}
	for i, m := range index.Manifests {
		if m.Platform != nil && m.Platform.Architecture == "arm64" {
			p := *m.Platform
			p.Variant = "v8"
			index.Manifests[i].Platform = &p
		}
	}
	for tag, mediaType := range map[string]string{
		"oci-v8":    ocispec.MediaTypeImageIndex,
		"docker-v8": dockerManifestList,
	} {
		idx := index
		idx.MediaType = mediaType
		data, err := json.Marshal(idx)
		if err != nil {
			t.Fatal(err)
		}
		s.Registry.PushManifest(t, "fixture/multi", tag, mediaType, data)
	}

	// A Docker manifest list of the Docker fixture's manifest.
	dockerImg := fx.Images["docker"]
	list, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: dockerManifestList,
		Manifests: []ocispec.Descriptor{{
			MediaType: dockerImg.MediaType, Digest: digest.Digest(dockerImg.Digest),
			Size:     int64(len(layoutBlob(t, "docker", dockerImg.Digest))),
			Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Registry.PushManifest(t, "fixture/docker", "list", dockerManifestList, list)

	bk := buildkitImageSource(t)
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	arm64v8 := ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	keys := map[string]string{}
	limit := func(n int) map[string]string { return map[string]string{pb.AttrImageLayerLimit: strconv.Itoa(n)} }
	for _, tc := range []struct {
		name, ref string
		platform  ocispec.Platform
		attrs     map[string]string
	}{
		{name: "oci manifest", ref: "fixture/single:1", platform: amd64},
		{name: "layer limit 1", ref: "fixture/single:1", platform: amd64, attrs: limit(1)},
		{name: "layer limit of every layer", ref: "fixture/single:1", platform: amd64, attrs: limit(3)},
		{name: "zstd layers", ref: "fixture/single-zstd:1", platform: amd64},
		{name: "zstd layers, layer limit", ref: "fixture/single-zstd:1", platform: amd64, attrs: limit(2)},
		{name: "docker manifest", ref: "fixture/docker:1", platform: amd64},
		{name: "docker manifest, layer limit", ref: "fixture/docker:1", platform: amd64, attrs: limit(1)},
		{name: "docker manifest list of docker manifests", ref: "fixture/docker:list", platform: amd64},
		{name: "docker manifest list of docker manifests, layer limit", ref: "fixture/docker:list", platform: amd64, attrs: limit(1)},
		{name: "oci index, arm64", ref: "fixture/multi:1", platform: arm64},
		{name: "oci index, arm64 layer limit", ref: "fixture/multi:1", platform: arm64, attrs: limit(1)},
		{name: "oci index, arm64/v8", ref: "fixture/multi:1", platform: arm64v8},
		{name: "oci index with v8, arm64/v8", ref: "fixture/multi:oci-v8", platform: arm64v8},
		{name: "oci index with v8, arm64", ref: "fixture/multi:oci-v8", platform: arm64},
		{name: "docker manifest list, amd64", ref: "fixture/multi:docker-v8", platform: amd64},
		{name: "docker manifest list, arm64/v8", ref: "fixture/multi:docker-v8", platform: arm64v8},
		{name: "docker manifest list, arm64/v8, layer limit", ref: "fixture/multi:docker-v8", platform: arm64v8, attrs: limit(1)},
		{name: "docker manifest list, arm64", ref: "fixture/multi:docker-v8", platform: arm64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := host + "/" + tc.ref
			id, err := bk.Identifier("docker-image", ref, tc.attrs, &pb.Platform{OS: tc.platform.OS, Architecture: tc.platform.Architecture, Variant: tc.platform.Variant})
			if err != nil {
				t.Fatalf("BuildKit's identifier: %v", err)
			}
			inst, err := bk.Resolve(t.Context(), id, nil, nil)
			if err != nil {
				t.Fatalf("BuildKit's resolve: %v", err)
			}
			key, pin, _, done, err := inst.CacheKey(t.Context(), nil, 0)
			if err != nil {
				t.Fatalf("BuildKit's key: %v", err)
			}
			if !done {
				t.Errorf("BuildKit's index 0 is not done")
			}
			keys[tc.name] = key
			p := tc.platform
			rec, _ := s.Submit(t, events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://" + ref, Attrs: tc.attrs, Platform: &p}})
			m := fleettest.Miss(t, rec)
			if len(m.Keys) == 0 {
				t.Fatal("no keys")
			}
			got := m.Keys[0]
			if got.Index != 0 || got.Key != key || got.Pin != pin {
				t.Errorf("key %s pin %s, BuildKit's %s pin %s", got.Key, got.Pin, key, pin)
			}
			if got.Digest != solverDigest(key) {
				t.Errorf("solver digest %s, want sha256 of the key with BuildKit's prefix", got.Digest)
			}
		})
	}
	// The premise of the variant cases: the platform is keyed as the build
	// gives it, so arm64/v8 and arm64 of one index have different keys.
	if keys["oci index, arm64/v8"] == keys["oci index, arm64"] {
		t.Errorf("BuildKit keys arm64/v8 and arm64 alike (%s): the variant cases check nothing", keys["oci index, arm64"])
	}
}

// layoutBlob reads blob d of the fixture layout name (testdata/images).
func layoutBlob(t *testing.T, name, d string) []byte {
	t.Helper()
	dg, err := digest.Parse(d)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(fleettest.ImagesDir, name, "blobs", dg.Algorithm().String(), dg.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
