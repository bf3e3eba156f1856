package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/cache/remotecache"
	cacheimport "github.com/moby/buildkit/cache/remotecache/v1"
	cacheimporttypes "github.com/moby/buildkit/cache/remotecache/v1/types"
	"github.com/moby/buildkit/solver"
	"github.com/moby/buildkit/util/contentutil"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
)

// fixtureDir is the cache a real BuildKit exported
// (testdata/caches/README.md).
var fixtureDir = filepath.Join("..", "testdata", "caches", "buildkit")

const (
	fixtureManifest = digest.Digest("sha256:cd3d8a4d4b3be06496b7acf8103ce11c31aaa7b93ef424585edcbc8a612ebd2d")
	fixtureConfig   = digest.Digest("sha256:9c05a826928e4abc287afa07bfc21419c7508acdbe9709c0bfdb4ea815334a15")
)

func fixtureBlob(t *testing.T, d digest.Digest) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(data); got != d {
		t.Fatalf("fixture blob %s has digest %s", d, got)
	}
	return data
}

func readFixture(t *testing.T) (manifest, config []byte, layers []ocispec.Descriptor) {
	t.Helper()
	manifest, config = fixtureBlob(t, fixtureManifest), fixtureBlob(t, fixtureConfig)
	m, err := cachefmt.ReadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != fixtureConfig {
		t.Fatalf("fixture manifest names config %s, want %s", m.Config.Digest, fixtureConfig)
	}
	return manifest, config, m.Layers
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// cachefmtRemarshal is what Stevedore's importer reads from a config,
// written again by Stevedore's exporter.
func cachefmtRemarshal(t *testing.T, config []byte, layers []ocispec.Descriptor) []byte {
	t.Helper()
	chains, err := cachefmt.ParseConfig(config, cachefmt.Manifest{Layers: layers}.Blobs())
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := chains.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return encode(t, cfg)
}

// BuildKit's own cache (a COPY record linking three roots, one four-layer
// chain) is a fixed point of BuildKit's Parse and Marshal, and of
// cachefmt's: both write its config byte for byte.
func TestBuildKitFixture(t *testing.T) {
	t.Parallel()
	_, config, layers := readFixture(t)
	if err := Validate(config, layers); err != nil {
		t.Fatalf("BuildKit refuses its own cache: %v", err)
	}
	bk, err := Remarshal(t.Context(), config, layers)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bk, config) {
		t.Errorf("BuildKit's Parse+Marshal of its own config:\n%s\nthe fixture:\n%s", bk, config)
	}
	if ours := cachefmtRemarshal(t, config, layers); !bytes.Equal(ours, config) {
		t.Errorf("cachefmt's ParseConfig+Marshal of BuildKit's config:\n%s\nthe fixture:\n%s", ours, config)
	}
}

// buildkitManifest is the image-manifest form BuildKit's exporter
// (contentCacheExporter.Finalize) writes for a marshalled config and its
// descriptors: one layer per config layer, in config order, media types
// converted, and the config as the manifest's config.
func buildkitManifest(t *testing.T, cfg *cacheimporttypes.CacheConfig, descs cacheimport.DescriptorProvider) []byte {
	t.Helper()
	ec, err := remotecache.NewExportableCache(true, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range cfg.Layers {
		pair, ok := descs[l.Blob]
		if !ok {
			t.Fatalf("BuildKit's Marshal gave no descriptor for blob %s", l.Blob)
		}
		ec.AddCacheBlob(pair.Descriptor)
	}
	ec.FinalizeCache(t.Context())
	data := encode(t, cfg)
	ec.SetConfig(ocispec.Descriptor{MediaType: cacheimporttypes.CacheConfigMediaTypeV0, Digest: digest.FromBytes(data), Size: int64(len(data))})
	mdata, err := ec.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return mdata
}

// cachefmtManifest is the image-manifest form Stevedore's exporter writes
// for a config and the layer descriptors cachefmt's Marshal gave.
func cachefmtManifest(t *testing.T, cfg cachefmt.Config, layers []ocispec.Descriptor) []byte {
	t.Helper()
	_, cdesc, err := cachefmt.ConfigDescriptor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wire := make([]ocispec.Descriptor, len(layers))
	for i, l := range layers {
		wire[i] = cachefmt.LayerDescriptor(l, cachefmt.DiffID(l), time.Time{}, true)
	}
	data, _, err := cachefmt.BuildManifest(cachefmt.FormImageManifest, true, wire, cdesc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The manifest BuildKit's exporter writes for the fixture's records, and
// the one cachefmt's BuildManifest writes for its own reading of them,
// are both the fixture's manifest byte for byte.
func TestFixtureManifest(t *testing.T) {
	t.Parallel()
	manifest, config, layers := readFixture(t)
	cfg, descs, err := remarshal(t.Context(), config, layers)
	if err != nil {
		t.Fatal(err)
	}
	if bk := buildkitManifest(t, cfg, descs); !bytes.Equal(bk, manifest) {
		t.Errorf("BuildKit's manifest:\n%s\nthe fixture:\n%s", bk, manifest)
	}
	chains, err := cachefmt.ParseConfig(config, cachefmt.Manifest{Layers: layers}.Blobs())
	if err != nil {
		t.Fatal(err)
	}
	ccfg, clayers, err := chains.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if ours := cachefmtManifest(t, ccfg, clayers); !bytes.Equal(ours, manifest) {
		t.Errorf("cachefmt's manifest:\n%s\nthe fixture:\n%s", ours, manifest)
	}
}

// A recordSet is what an exporter sees for one build: AddRoot calls, in
// order. The same root may come more than once.
type recordSet []rootAdd

type rootAdd struct {
	digest  digest.Digest
	results []cachefmt.Chain
}

// emptyLayer is the empty gzip layer as a base image lists it.
var emptyLayer = ocispec.Descriptor{
	MediaType: ocispec.MediaTypeImageLayerGzip,
	Digest:    cachefmt.EmptyGzipLayer,
	Size:      32,
	Annotations: map[string]string{
		cachefmt.AnnotationCreatedAt:    "2026-11-22T12:00:00Z",
		cachefmt.AnnotationUncompressed: "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
	},
}

// layerBlob is the descriptor of the i-th layer blob of the generator.
func layerBlob(i int) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest:    digest.FromString(fmt.Sprintf("layer blob %d", i)),
		Size:      int64(100*i + 17),
		Annotations: map[string]string{
			cachefmt.AnnotationCreatedAt:    time.Date(2026, 11, 22, 12, 0, i%60, 123456789, time.UTC).Format(time.RFC3339Nano),
			cachefmt.AnnotationUncompressed: digest.FromString(fmt.Sprintf("layer diff %d", i)).String(),
		},
	}
}

// generate draws a record set: 1 to 10 AddRoot calls, some repeating a
// root, each with no result (a bare root), one, or two; chains of 1 to 8
// layers that often extend a prefix of an earlier chain and sometimes
// hold the empty gzip layer; distinct creation times with nanoseconds,
// some on whole seconds or milliseconds (which RFC 3339 writes shorter).
// With pool > 0 layers are drawn from that many blobs, so chains share
// blobs at any position; with pool 0 a layer is a new blob or, sometimes,
// one already lower in its chain, so chains share prefixes but a blob
// rarely tops two different parents.
func generate(r *rand.Rand, pool int) recordSet {
	next := 0
	blob := func(below []ocispec.Descriptor) ocispec.Descriptor {
		if pool > 0 {
			return layerBlob(r.IntN(pool))
		}
		if len(below) > 0 && r.IntN(8) == 0 {
			return below[r.IntN(len(below))]
		}
		next++
		return layerBlob(next)
	}
	base := time.Date(2026, 11, 22, 12, 41, 32, 0, time.UTC)
	used := map[time.Time]bool{}
	createdAt := func() time.Time {
		for {
			at := base.Add(time.Duration(r.Int64N(int64(72 * time.Hour))))
			switch r.IntN(8) {
			case 0:
				at = at.Truncate(time.Second)
			case 1:
				at = at.Truncate(time.Millisecond)
			}
			if !used[at] {
				used[at] = true
				return at
			}
		}
	}
	var chains [][]ocispec.Descriptor
	chain := func() []ocispec.Descriptor {
		var layers []ocispec.Descriptor
		if len(chains) > 0 && r.IntN(2) == 0 {
			prev := chains[r.IntN(len(chains))]
			layers = slices.Clone(prev[:1+r.IntN(len(prev))])
		}
		for n := 1 + r.IntN(8); len(layers) < n; {
			if r.IntN(10) == 0 {
				layers = append(layers, emptyLayer)
			} else {
				layers = append(layers, blob(layers))
			}
		}
		chains = append(chains, layers)
		return layers
	}
	var set recordSet
	for i := range 1 + r.IntN(10) {
		add := rootAdd{digest: cachefmt.RecordDigest(digest.FromString(fmt.Sprintf("buildkit.source.v0:docker-image://registry.test/base:%d", i)), 0)}
		if i > 0 && r.IntN(8) == 0 {
			add.digest = set[r.IntN(len(set))].digest
		}
		switch n := r.IntN(10); {
		case n < 2:
		case n < 8:
			add.results = []cachefmt.Chain{{Layers: chain(), CreatedAt: createdAt()}}
		default:
			add.results = []cachefmt.Chain{{Layers: chain(), CreatedAt: createdAt()}, {Layers: chain(), CreatedAt: createdAt()}}
		}
		set = append(set, add)
	}
	return set
}

// cachefmtMarshal builds the set with cachefmt, as Stevedore's exporter
// does, and returns the config bytes and the descriptors Marshal gave.
func (set recordSet) cachefmtMarshal(t *testing.T) (cachefmt.Config, []byte, []ocispec.Descriptor) {
	t.Helper()
	c := cachefmt.NewChains()
	for _, add := range set {
		c.AddRoot(add.digest, add.results...)
	}
	cfg, layers, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return cfg, encode(t, cfg), layers
}

// buildkitMarshal builds the set in BuildKit's own CacheChains, as
// BuildKit's solver exports roots with results, and returns what its
// Marshal writes.
func (set recordSet) buildkitMarshal(t *testing.T) []byte {
	t.Helper()
	chains := cacheimport.NewCacheChains()
	for _, add := range set {
		var results []solver.CacheExportResult
		for _, ch := range add.results {
			remote := &solver.Remote{}
			mp := contentutil.NewMultiProvider(nil)
			for _, l := range ch.Layers {
				remote.Descriptors = append(remote.Descriptors, l)
				mp.Add(l.Digest, cacheimport.DescriptorProviderPair{Descriptor: l, Provider: noContent{}})
			}
			remote.Provider = mp
			results = append(results, solver.CacheExportResult{CreatedAt: ch.CreatedAt, Result: remote})
		}
		if _, _, err := chains.Add(add.digest, nil, results); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _, err := chains.Marshal(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return encode(t, cfg)
}

// tied reports whether the layer order of a config depends on the order
// its chains were walked: one blob on top of two different parents
// (sortConfig orders layers by blob, then by the parent's index before
// sorting, which is the order layers were first met in). BuildKit walks
// its records in map order, so for such a config its Marshal writes one
// of several byte sequences, differing only in the order of those
// layers. cachefmt walks records in the order they were added, so its
// bytes for such a config depend on the order of the AddRoot calls, and
// its ParseConfig+Marshal (which walks them in digest order) may reorder
// them: the same records do not always give the same config digest.
func tied(cfg cachefmt.Config) bool {
	withParent := map[digest.Digest]int{}
	for _, l := range cfg.Layers {
		if l.ParentIndex != -1 {
			withParent[l.Blob]++
			if withParent[l.Blob] > 1 {
				return true
			}
		}
	}
	return false
}

// canonical re-sorts the layers of a config by their whole chain (blob,
// then the parent's chain; a bottom layer first), which is sortConfig's
// order without its dependence on walk order, and remaps every index. Two
// configs for the same records are canonically equal whatever order their
// chains were walked in.
func canonical(t *testing.T, data []byte) []byte {
	t.Helper()
	var cfg cachefmt.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(cfg.Layers))
	var key func(i, depth int) string
	key = func(i, depth int) string {
		if depth > len(cfg.Layers) || i < 0 || i >= len(cfg.Layers) {
			t.Fatalf("config has a looping or dangling layer: %s", data)
		}
		if keys[i] == "" {
			l := cfg.Layers[i]
			keys[i] = l.Blob.String()
			if l.ParentIndex != -1 {
				keys[i] += " " + key(l.ParentIndex, depth+1)
			}
		}
		return keys[i]
	}
	order := make([]int, len(cfg.Layers))
	for i := range order {
		order[i] = i
		key(i, 0)
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	index := make([]int, len(order))
	for n, old := range order {
		index[old] = n
	}
	layers := make([]cachefmt.Layer, len(order))
	for n, old := range order {
		layers[n] = cfg.Layers[old]
		if p := layers[n].ParentIndex; p != -1 {
			layers[n].ParentIndex = index[p]
		}
	}
	cfg.Layers = layers
	for i := range cfg.Records {
		for j := range cfg.Records[i].Results {
			cfg.Records[i].Results[j].LayerIndex = index[cfg.Records[i].Results[j].LayerIndex]
		}
		for j := range cfg.Records[i].ChainedResults {
			for k, li := range cfg.Records[i].ChainedResults[j].LayerIndexes {
				cfg.Records[i].ChainedResults[j].LayerIndexes[k] = index[li]
			}
		}
	}
	return encode(t, cfg)
}

// For random record sets of roots with results, cachefmt writes the bytes
// BuildKit writes: BuildKit's Parse+Marshal of cachefmt's config gives it
// back unchanged, BuildKit's Marshal of the same roots built in its own
// CacheChains gives the same config, cachefmt's ParseConfig+Marshal is a
// fixed point, the order roots were added in does not matter, and the
// manifest is BuildKit's. Where BuildKit's own output depends on its map
// order (tied), each of these is required up to the order of the tied
// layers.
func TestRootsMatchBuildKit(t *testing.T) {
	t.Parallel()
	const seeds = 200
	var tiedSets int
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x5745_4544_4f52_45))
		pool := 0 // odd seeds: new blobs, shared prefixes
		if seed%2 == 0 {
			pool = 3 + int(seed%8) // even seeds: 3 to 10 blobs
		}
		set := generate(r, pool)
		if isTied := checkRoots(t, seed, set, r); isTied {
			tiedSets++
		}
	}
	t.Logf("%d of %d record sets have a blob on top of two parents; those were compared up to the order of the tied layers", tiedSets, seeds)
	if tiedSets < seeds/5 || tiedSets > seeds-seeds/5 {
		t.Errorf("%d of %d record sets tied: the generator no longer covers both kinds well", tiedSets, seeds)
	}
}

func checkRoots(t *testing.T, seed uint64, set recordSet, r *rand.Rand) bool {
	t.Helper()
	cfg, ours, descs := set.cachefmtMarshal(t)
	if len(descs) != len(cfg.Layers) {
		t.Fatalf("seed %d: %d descriptors for %d layers", seed, len(descs), len(cfg.Layers))
	}
	for i, d := range descs {
		if d.Digest != cfg.Layers[i].Blob {
			t.Fatalf("seed %d: descriptor %d is %s, layer %d is %s", seed, i, d.Digest, i, cfg.Layers[i].Blob)
		}
	}
	wire := make([]ocispec.Descriptor, len(descs))
	for i, d := range descs {
		wire[i] = cachefmt.LayerDescriptor(d, cachefmt.DiffID(d), time.Time{}, true)
	}
	bkCfg, bkDescs, err := remarshal(t.Context(), ours, wire)
	if err != nil {
		t.Fatalf("seed %d: BuildKit refuses cachefmt's config: %v\n%s", seed, err, ours)
	}
	shuffled := slices.Clone(set)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	_, reordered, _ := shuffled.cachefmtMarshal(t)
	others := []struct {
		name string
		data []byte
		// exact holds even for tied layers: cachefmt's own order never
		// depends on how records were added; BuildKit's does.
		exact bool
	}{
		{"BuildKit's Parse+Marshal of cachefmt's config", encode(t, bkCfg), false},
		{"BuildKit's Marshal of the same roots", set.buildkitMarshal(t), false},
		{"cachefmt's ParseConfig+Marshal of its own config", cachefmtRemarshal(t, ours, wire), true},
		{"cachefmt's Marshal of the roots added in another order", reordered, true},
	}
	isTied := tied(cfg)
	for _, o := range others {
		switch {
		case (!isTied || o.exact) && !bytes.Equal(o.data, ours):
			t.Errorf("seed %d: %s differs from cachefmt's config (-cachefmt +other):\n%s", seed, o.name, cmp.Diff(string(ours), string(o.data)))
		case isTied && !bytes.Equal(canonical(t, o.data), canonical(t, ours)):
			t.Errorf("seed %d: %s differs from cachefmt's config beyond the order of tied layers (-cachefmt +other):\n%s", seed, o.name, cmp.Diff(string(ours), string(o.data)))
		}
	}
	if !isTied && len(cfg.Layers) > 0 {
		// BuildKit writes no cache at all when no record has a layer.
		if bk, ours := buildkitManifest(t, bkCfg, bkDescs), cachefmtManifest(t, cfg, descs); !bytes.Equal(bk, ours) {
			t.Errorf("seed %d: manifests differ (-cachefmt +BuildKit):\n%s", seed, cmp.Diff(string(ours), string(bk)))
		}
	}
	return isTied
}

// Configs BuildKit's importer refuses, cachefmt's refuses too, and its
// error says what BuildKit's says. Two rows record where they part: a
// record digest that is not a digest (BuildKit never writes one; it skips
// "random:" records when exporting) only cachefmt refuses, and a result
// whose blob the manifest does not list both accept and leave out.
func TestParseErrorsMatchBuildKit(t *testing.T) {
	t.Parallel()
	rec := digest.FromString("record").String()
	b0, b1 := digest.FromString("blob 0"), digest.FromString("blob 1")
	layers := []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: b0, Size: 1},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: b1, Size: 1},
	}
	const at = `"createdAt":"2026-11-22T12:41:32.893440295Z"`
	type outcome int
	const (
		bothRefuse outcome = iota
		bothAccept
		onlyCachefmtRefuses
	)
	tests := []struct {
		name, config string
		want         outcome
	}{
		{"empty config", ``, bothRefuse},
		{"truncated config", `{"records":`, bothRefuse},
		{"looping record", `{"records":[{"digest":"` + rec + `","inputs":[[{"link":0}]]}]}`, bothRefuse},
		{"looping records", `{"records":[{"digest":"` + rec + `","inputs":[[{"link":1}]]},{"digest":"` + rec + `","inputs":[[{"link":0}]]}]}`, bothRefuse},
		{"dangling link", `{"records":[{"digest":"` + rec + `","inputs":[[{"link":7}]]}]}`, bothRefuse},
		{"negative link", `{"records":[{"digest":"` + rec + `","inputs":[[{"link":-1}]]}]}`, bothRefuse},
		{"empty input", `{"records":[{"digest":"` + rec + `","inputs":[[]]}]}`, bothRefuse},
		{"layer index out of range", `{"layers":[{"blob":"` + b0.String() + `","parent":-1}],"records":[{"digest":"` + rec + `","layers":[{"layer":3,` + at + `}]}]}`, bothRefuse},
		{"dangling layer parent", `{"layers":[{"blob":"` + b0.String() + `","parent":5}],"records":[{"digest":"` + rec + `","layers":[{"layer":0,` + at + `}]}]}`, bothRefuse},
		{"layer its own parent", `{"layers":[{"blob":"` + b0.String() + `"}],"records":[{"digest":"` + rec + `","layers":[{"layer":0,` + at + `}]}]}`, bothRefuse},
		{"looping layer parents", `{"layers":[{"blob":"` + b0.String() + `","parent":1},{"blob":"` + b1.String() + `"}],"records":[{"digest":"` + rec + `","layers":[{"layer":1,` + at + `}]}]}`, bothRefuse},
		{"negative chained-result index", `{"layers":[{"blob":"` + b0.String() + `","parent":-1}],"records":[{"digest":"` + rec + `","chains":[{"layers":[0,-1],` + at + `}]}]}`, bothRefuse},
		{"chained-result index out of range", `{"layers":[{"blob":"` + b0.String() + `","parent":-1}],"records":[{"digest":"` + rec + `","chains":[{"layers":[1],` + at + `}]}]}`, bothRefuse},
		{"record digest not a digest", `{"records":[{"digest":"nope"}]}`, onlyCachefmtRefuses},
		{"unlisted blob", `{"layers":[{"blob":"` + digest.FromString("unlisted").String() + `","parent":-1}],"records":[{"digest":"` + rec + `","layers":[{"layer":0,` + at + `}]}]}`, bothAccept},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bkErr := Validate([]byte(tt.config), layers)
			_, err := cachefmt.ParseConfig([]byte(tt.config), cachefmt.Manifest{Layers: layers}.Blobs())
			switch tt.want {
			case bothRefuse:
				if bkErr == nil {
					t.Fatalf("BuildKit accepts %s", tt.config)
				}
				if err == nil {
					t.Fatalf("cachefmt accepts what BuildKit refuses with %q: %s", bkErr, tt.config)
				}
				if !strings.Contains(err.Error(), bkErr.Error()) {
					t.Errorf("cachefmt's error %q does not say BuildKit's %q", err, bkErr)
				}
			case bothAccept:
				if bkErr != nil || err != nil {
					t.Errorf("BuildKit: %v; cachefmt: %v; want both to accept %s", bkErr, err, tt.config)
				}
			case onlyCachefmtRefuses:
				if bkErr != nil || err == nil {
					t.Errorf("BuildKit: %v; cachefmt: %v; want only cachefmt to refuse %s", bkErr, err, tt.config)
				}
			}
		})
	}
}

// The empty gzip layer stays in a chain, in cachefmt as in BuildKit's
// CacheChains.Marshal: both write the same config for a chain through it.
func TestEmptyGzipLayer(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 12, 41, 32, 893440295, time.UTC)
	set := recordSet{{
		digest:  cachefmt.RecordDigest(digest.FromString("buildkit.source.v0:docker-image://registry.test/base:1"), 0),
		results: []cachefmt.Chain{{Layers: []ocispec.Descriptor{layerBlob(1), emptyLayer, layerBlob(2)}, CreatedAt: at}},
	}}
	cfg, ours, descs := set.cachefmtMarshal(t)
	if len(cfg.Layers) != 3 || !bytes.Contains(ours, []byte(cachefmt.EmptyGzipLayer)) {
		t.Errorf("cachefmt's config drops the empty gzip layer: %s", ours)
	}
	if bk := set.buildkitMarshal(t); !bytes.Equal(bk, ours) {
		t.Errorf("BuildKit's Marshal of a chain through the empty gzip layer:\n%s\ncachefmt's:\n%s", bk, ours)
	}
	back, err := Remarshal(t.Context(), ours, descs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, ours) {
		t.Errorf("BuildKit reads cachefmt's chain as\n%s\nnot\n%s", back, ours)
	}
}
