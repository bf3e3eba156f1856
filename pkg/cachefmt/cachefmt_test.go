package cachefmt_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// The BuildKit-exported cache of testdata/caches/buildkit and the values
// BuildKit computed for it (its README).
const (
	bkManifest = "sha256:cd3d8a4d4b3be06496b7acf8103ce11c31aaa7b93ef424585edcbc8a612ebd2d"
	bkConfig   = "sha256:9c05a826928e4abc287afa07bfc21419c7508acdbe9709c0bfdb4ea815334a15"
	bkKey0     = "sha256:5eb9f6e183055088cfd17b6c32efcfbcc7f78f20fe84b9cefc9573eaf0d172ae"
	bkKey1     = "sha256:238ba0a5abad95d0c6e0237483a042c17bd9ac943856c6278dec4cc8055e2fb9"
	bkRecord0  = "sha256:72467ceabc88f6dff3c45a87d0ae38debeabc2d57023f1f4e2aab9a84b3d315b"
	bkRecord1  = "sha256:da64c9c8bc2911ae5a07026acbc1bbd900592e450ab089ee290f1a12337c4fa9"
	bkContext  = "sha256:ea67dba90c8f865e36f308a8ace7af68bc136082a8546f5e7981dcd0fa7db8ae"
	bkCopy     = "sha256:56d6fc1b795c9351a5db66c09f857fc999417b357545411693b454f0a5df3e58"
)

func blob(t *testing.T, d string) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "testdata", "caches", "buildkit", "blobs", "sha256")
	data, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(d, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRecordDigestMatchesBuildKit(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{bkKey0: bkRecord0, bkKey1: bkRecord1} {
		if got := cachefmt.RecordDigest(source.SolverDigest(key), 0); got.String() != want {
			t.Errorf("RecordDigest(SolverDigest(%s), 0) = %s, BuildKit wrote %s", key, got, want)
		}
	}
}

func parseFixture(t *testing.T) (cachefmt.Manifest, *cachefmt.Chains) {
	t.Helper()
	m, err := cachefmt.ReadManifest(blob(t, bkManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Form != cachefmt.FormImageManifest || m.Config.Digest != bkConfig || len(m.Layers) != 4 {
		t.Fatalf("manifest read as %v, config %s, %d layers", m.Form, m.Config.Digest, len(m.Layers))
	}
	chains, err := cachefmt.ParseConfig(blob(t, bkConfig), m.Blobs())
	if err != nil {
		t.Fatal(err)
	}
	return m, chains
}

// Parsing BuildKit's own cache gives its records, links and chain.
func TestParseBuildKitCache(t *testing.T) {
	t.Parallel()
	m, chains := parseFixture(t)
	byDigest := map[digest.Digest]*cachefmt.Item{}
	for _, it := range chains.Items() {
		byDigest[it.Digest] = it
	}
	for _, d := range []string{bkRecord0, bkRecord1, bkContext} {
		it := byDigest[digest.Digest(d)]
		if it == nil || !it.Root() || len(it.Results) != 0 {
			t.Errorf("record %s: want a bare root, got %+v", d, it)
		}
	}
	cp := byDigest[bkCopy]
	if cp == nil || len(cp.Inputs) != 2 {
		t.Fatalf("COPY record: %+v", cp)
	}
	var in0 []string
	for _, l := range cp.Inputs[0] {
		in0 = append(in0, l.Src.Digest.String())
	}
	if diff := cmp.Diff([]string{bkRecord0, bkRecord1}, in0); diff != "" {
		t.Errorf("COPY input 0 (-want +got):\n%s", diff)
	}
	if len(cp.Inputs[1]) != 1 || cp.Inputs[1][0].Src.Digest != bkContext {
		t.Errorf("COPY input 1: %+v", cp.Inputs[1])
	}
	best, ok := cp.Best()
	if !ok || len(best.Layers) != 4 {
		t.Fatalf("COPY result: %+v", best)
	}
	// The chain, bottom first, by the diffIDs of the base image's config
	// (testdata/images/buildkit-base) and then the COPY layer.
	var got []digest.Digest
	for _, l := range best.Layers {
		got = append(got, cachefmt.DiffID(l))
	}
	if best.Layers[3].Digest != "sha256:b9e227451308c8a8a24c2da708428e1d186a26616cb48e1342c1f24710121e7c" || m.Layers[1].Digest != best.Layers[3].Digest {
		t.Errorf("top of the COPY chain is %s, want the 111-byte COPY layer", best.Layers[3].Digest)
	}
	wantTop := digest.Digest("sha256:44914d009fb3d8dd8bdd63af68f1a5fb21722dd4519db3972ba08f2cdd6e568e")
	if got[3] != wantTop {
		t.Errorf("top of the COPY chain has diffID %s, want %s", got[3], wantTop)
	}
	if chainID := chainIDOf(got[:3]); chainID.String() != bkKey1 {
		t.Errorf("chainID of the COPY chain's first 3 layers = %s, want the base image's index-1 key %s", chainID, bkKey1)
	}
	if chains.Dropped() != 0 {
		t.Errorf("%d results dropped", chains.Dropped())
	}
}

func chainIDOf(diffIDs []digest.Digest) digest.Digest {
	return source.ConfigKey(diffIDs)
}

// Marshal of what Parse read writes BuildKit's bytes again: the same
// config digest, and the same manifest.
func TestMarshalReproducesBuildKit(t *testing.T) {
	t.Parallel()
	m, chains := parseFixture(t)
	cfg, layers, err := chains.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	data, desc, err := cachefmt.ConfigDescriptor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != bkConfig {
		t.Errorf("config digest %s, BuildKit's is %s\nours:   %s\nits:    %s", desc.Digest, bkConfig, data, blob(t, bkConfig))
	}
	wire := make([]ocispec.Descriptor, len(layers))
	for i, l := range layers {
		wire[i] = cachefmt.LayerDescriptor(l, cachefmt.DiffID(l), time.Time{}, true)
	}
	mdata, mdesc, err := cachefmt.BuildManifest(cachefmt.FormImageManifest, true, wire, desc)
	if err != nil {
		t.Fatal(err)
	}
	if mdesc.Digest != bkManifest {
		t.Errorf("manifest digest %s, BuildKit's is %s\nours: %s\nits:  %s", mdesc.Digest, bkManifest, mdata, blob(t, bkManifest))
	}
	if diff := cmp.Diff(m.Layers, wire); diff != "" {
		t.Errorf("layer descriptors (-BuildKit +ours):\n%s", diff)
	}
}

func layer(n int, created time.Time) ocispec.Descriptor {
	d := digest.FromString(strings.Repeat("x", n))
	t, _ := created.UTC().MarshalText()
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(n),
		Annotations: map[string]string{cachefmt.AnnotationCreatedAt: string(t), cachefmt.AnnotationUncompressed: digest.FromString("u" + d.String()).String()}}
}

// Roots with results marshal the same whatever the order they were added
// in, share layers, and keep the empty gzip layer, as BuildKit does.
func TestMarshalRootsDeterministic(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC)
	l1, l2, l3 := layer(1, at), layer(2, at), layer(3, at)
	empty := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: cachefmt.EmptyGzipLayer, Size: 32}
	a := cachefmt.Chain{Layers: []ocispec.Descriptor{l1, l2, empty}, CreatedAt: at}
	b := cachefmt.Chain{Layers: []ocispec.Descriptor{l1, l2, l3}, CreatedAt: at.Add(time.Second)}
	r := func(s string) digest.Digest { return cachefmt.RecordDigest(digest.FromString(s), 0) }
	build := func(order []int) []byte {
		c := cachefmt.NewChains()
		adds := []func(){
			func() { c.AddRoot(r("a0"), a) },
			func() { c.AddRoot(r("a1"), a) },
			func() { c.AddRoot(r("b0"), b) },
			func() { c.AddRoot(r("bare")) },
		}
		for _, i := range order {
			adds[i]()
		}
		cfg, _, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	first := build([]int{0, 1, 2, 3})
	for _, order := range [][]int{{3, 2, 1, 0}, {2, 0, 3, 1}, {1, 3, 0, 2}} {
		if got := build(order); !bytes.Equal(got, first) {
			t.Errorf("order %v:\n%s\nwant\n%s", order, got, first)
		}
	}
	var cfg cachefmt.Config
	if err := json.Unmarshal(first, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Layers) != 4 || len(cfg.Records) != 4 {
		t.Fatalf("config %s: want 4 layers (l1, l2, the empty layer, l3) and 4 records", first)
	}
	if !strings.Contains(string(first), cachefmt.EmptyGzipLayer.String()) {
		t.Errorf("the empty gzip layer is not in the config: %s", first)
	}
	// The bottom layer has "parent":-1 and a parent index of 0 is absent.
	if !strings.Contains(string(first), `"parent":-1`) {
		t.Errorf("no bottom layer written with parent -1: %s", first)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	d := digest.FromString("r")
	b := digest.FromString("blob")
	blobs := map[digest.Digest]ocispec.Descriptor{b: {Digest: b, Size: 1}}
	tests := []struct {
		name, config, want string
	}{
		{"looping record", `{"records":[{"digest":"` + d.String() + `","inputs":[[{"link":0}]]}]}`, "invalid looping record"},
		{"dangling link", `{"records":[{"digest":"` + d.String() + `","inputs":[[{"link":7}]]}]}`, "invalid record ID: 7"},
		{"empty input", `{"records":[{"digest":"` + d.String() + `","inputs":[[]]}]}`, "invalid empty input for record 0"},
		{"bad layer index", `{"layers":[{"blob":"` + b.String() + `","parent":-1}],"records":[{"digest":"` + d.String() + `","layers":[{"layer":3,"createdAt":"2026-01-01T00:00:00Z"}]}]}`, "invalid layer index 3"},
		{"looping layer", `{"layers":[{"blob":"` + b.String() + `"}],"records":[{"digest":"` + d.String() + `","layers":[{"layer":0,"createdAt":"2026-01-01T00:00:00Z"}]}]}`, "invalid looping layer"},
		{"bad chain index", `{"records":[{"digest":"` + d.String() + `","chains":[{"layers":[-1],"createdAt":"2026-01-01T00:00:00Z"}]}]}`, "invalid layer index -1"},
		{"bad record digest", `{"records":[{"digest":"nope"}]}`, "record 0: digest"},
		{"not json", `{"records":`, "cache config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := cachefmt.ParseConfig([]byte(tt.config), blobs)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, cachefmt.ErrInvalid) {
				t.Errorf("ParseConfig = %v, want an ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

// A result whose blob the manifest does not list is dropped, as BuildKit
// does, and counted.
func TestParseDropsResultsWithUnlistedBlobs(t *testing.T) {
	t.Parallel()
	d := digest.FromString("r")
	b := digest.FromString("blob")
	cfg := `{"layers":[{"blob":"` + b.String() + `","parent":-1}],"records":[{"digest":"` + d.String() + `","layers":[{"layer":0,"createdAt":"2026-01-01T00:00:00Z"}]}]}`
	chains, err := cachefmt.ParseConfig([]byte(cfg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if chains.Dropped() != 1 || len(chains.Items()) != 1 || len(chains.Items()[0].Results) != 0 {
		t.Errorf("dropped %d, items %+v", chains.Dropped(), chains.Items())
	}
}

func TestManifestForms(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := cachefmt.LayerDescriptor(ocispec.Descriptor{MediaType: cachefmt.MediaTypeDockerLayerGzip, Digest: digest.FromString("l"), Size: 3}, digest.FromString("u"), at, true)
	if l.MediaType != ocispec.MediaTypeImageLayerGzip || l.Annotations[cachefmt.AnnotationCreatedAt] != "2026-01-02T03:04:05Z" {
		t.Errorf("layer descriptor %+v", l)
	}
	_, cdesc, err := cachefmt.ConfigDescriptor(cachefmt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cachefmt.BuildManifest(cachefmt.FormImageManifest, false, nil, cdesc); err == nil ||
		!strings.Contains(err.Error(), "OCI mediatypes are required for image-manifest cache format") {
		t.Errorf("image manifest without OCI media types: %v", err)
	}
	for _, tt := range []struct {
		form      cachefmt.Form
		oci       bool
		mediaType string
	}{
		{cachefmt.FormImageManifest, true, ocispec.MediaTypeImageManifest},
		{cachefmt.FormIndex, true, ocispec.MediaTypeImageIndex},
		{cachefmt.FormIndex, false, cachefmt.MediaTypeDockerManifestList},
	} {
		layers := []ocispec.Descriptor{cachefmt.LayerDescriptor(l, "", at, tt.oci)}
		data, desc, err := cachefmt.BuildManifest(tt.form, tt.oci, layers, cdesc)
		if err != nil {
			t.Fatal(err)
		}
		if desc.MediaType != tt.mediaType || desc.Digest != digest.FromBytes(data) {
			t.Errorf("%v oci=%v: descriptor %+v", tt.form, tt.oci, desc)
		}
		m, err := cachefmt.ReadManifest(data)
		if err != nil {
			t.Fatal(err)
		}
		if m.Form != tt.form || m.Config.Digest != cdesc.Digest || len(m.Layers) != 1 || m.Layers[0].Digest != l.Digest {
			t.Errorf("%v oci=%v read back as %+v", tt.form, tt.oci, m)
		}
		if !tt.oci && m.Layers[0].MediaType != cachefmt.MediaTypeDockerLayerGzip {
			t.Errorf("docker form kept media type %s", m.Layers[0].MediaType)
		}
	}
}

func TestReadManifestRejects(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]string{
		"not json":         `{`,
		"neither":          `{"schemaVersion":2}`,
		"index, no config": `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}`,
		"too large":        `{"schemaVersion":2,"x":"` + strings.Repeat("a", cachefmt.MaxBlobSize) + `"}`,
	} {
		if _, err := cachefmt.ReadManifest([]byte(data)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := cachefmt.ReadManifest([]byte(`{"schemaVersion":2}`)); err == nil || !strings.Contains(err.Error(), "unsupported or uninferrable manifest type") {
		t.Errorf("error text: %v", err)
	}
	m, err := cachefmt.ReadManifest([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}`))
	if err != nil || m.Form != cachefmt.FormInline {
		t.Errorf("an image manifest reads as %v, %v; want the inline form", m.Form, err)
	}
}

func TestSizeCap(t *testing.T) {
	t.Parallel()
	c := cachefmt.NewChains()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 12000 {
		c.AddRoot(cachefmt.RecordDigest(digest.FromString(strings.Repeat("k", i)), 0), cachefmt.Chain{Layers: []ocispec.Descriptor{layer(i+1, at)}, CreatedAt: at})
	}
	cfg, _, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = cachefmt.ConfigDescriptor(cfg)
	if !errors.Is(err, cachefmt.ErrTooLarge) || !strings.Contains(err.Error(), "> 1048576") {
		t.Errorf("a config over 1 MiB: %v", err)
	}
}

func TestInlineConfig(t *testing.T) {
	t.Parallel()
	records := `{"records":[{"digest":"` + digest.FromString("r").String() + `","layers":[{"layer":1,"createdAt":"2026-01-01T00:00:00Z"}]}]}`
	img := map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs":                 map[string]any{"type": "layers", "diff_ids": []string{digest.FromString("d0").String(), digest.FromString("d1").String()}},
		"history":                []map[string]any{{"created": "2026-01-01T00:00:00Z", "created_by": "ADD a"}, {"empty_layer": true}, {"created_by": "RUN b"}},
		cachefmt.InlineConfigKey: []byte(records),
	}
	data, err := json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	m := cachefmt.Manifest{Form: cachefmt.FormInline, Layers: []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("l0"), Size: 1},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("l1"), Size: 1},
	}}
	cfg, layers, found, err := cachefmt.InlineConfig(data, m)
	if err != nil || !found {
		t.Fatalf("InlineConfig: %v %v", found, err)
	}
	if len(cfg.Layers) != 2 || cfg.Layers[0].ParentIndex != -1 || cfg.Layers[1].ParentIndex != 0 {
		t.Errorf("layers %+v", cfg.Layers)
	}
	if cachefmt.DiffID(layers[1]) != digest.FromString("d1") || layers[1].Annotations[cachefmt.AnnotationDescription] != "RUN b" {
		t.Errorf("layer 1 annotations %v", layers[1].Annotations)
	}
	chains, err := cachefmt.Parse(cfg, m2(layers))
	if err != nil {
		t.Fatal(err)
	}
	if best, ok := chains.Items()[0].Best(); !ok || len(best.Layers) != 2 {
		t.Errorf("inline record result %+v", best)
	}
	delete(img, cachefmt.InlineConfigKey)
	data, _ = json.Marshal(img)
	if _, _, found, err := cachefmt.InlineConfig(data, m); found || err != nil {
		t.Errorf("no inline cache: found %v, %v", found, err)
	}
}

func m2(layers []ocispec.Descriptor) map[digest.Digest]ocispec.Descriptor {
	return cachefmt.Manifest{Layers: layers}.Blobs()
}

func TestParseExportTarget(t *testing.T) {
	t.Parallel()
	got, err := cachefmt.ParseExportTarget("type=registry,ref=user/cache,mode=max,compression=zstd,force-compression=,registry.insecure=true")
	if err != nil {
		t.Fatal(err)
	}
	want := cachefmt.ExportTarget{Type: "registry", Ref: "docker.io/user/cache:latest", Insecure: true, Mode: "max",
		OCIMediaTypes: true, Form: cachefmt.FormImageManifest, Compression: "zstd", ForceCompression: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	got, err = cachefmt.ParseExportTarget(`type=local,"dest=/tmp/a,b",oci-mediatypes=false,mode=bogus`)
	if err != nil {
		t.Fatal(err)
	}
	want = cachefmt.ExportTarget{Type: "local", Dest: "/tmp/a,b", Tag: "latest", Mode: "min", Form: cachefmt.FormIndex, Compression: "gzip"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for in, text := range map[string]string{
		"type=local":                           "local cache exporter requires dest",
		"type=registry":                        "registry cache exporter requires ref",
		"type=gha,url=x":                       `unknown cache exporter: "gha"`,
		"dest=x":                               "requires type",
		"type=local,dest=x,ignore-error=maybe": "failed to parse ignore-error",
		"type=local,dest=x,compression=lz4":    "unsupported compression type lz4",
		"type=local,dest=x,oci-mediatypes=false,image-manifest=true": "OCI mediatypes are required for image-manifest cache format",
		"type=registry,ref=a/B": "invalid reference",
		"novalue":               "key=value",
	} {
		_, err := cachefmt.ParseExportTarget(in)
		if err == nil || !strings.Contains(err.Error(), text) || !errors.Is(err, cachefmt.ErrInvalid) {
			t.Errorf("ParseExportTarget(%q) = %v, want ErrInvalid with %q", in, err, text)
		}
	}
}

func TestParseImportSource(t *testing.T) {
	t.Parallel()
	got, err := cachefmt.ParseImportSource("type=local,src=/c,digest=" + bkManifest)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != "local" || got.Src != "/c" || got.Digest != bkManifest || got.Tag != "" {
		t.Errorf("%+v", got)
	}
	got, err = cachefmt.ParseImportSource("type=local,src=/c")
	if err != nil || got.Tag != "latest" {
		t.Errorf("default tag: %+v %v", got, err)
	}
	for in, text := range map[string]string{
		"type=local":                   "local cache importer requires src",
		"type=registry":                "registry cache importer requires ref",
		"type=s3,bucket=b":             `unknown cache importer: "s3"`,
		"type=local,src=/c,digest=bad": "invalid digest",
	} {
		_, err := cachefmt.ParseImportSource(in)
		if err == nil || !strings.Contains(err.Error(), text) || !errors.Is(err, cachefmt.ErrInvalid) {
			t.Errorf("ParseImportSource(%q) = %v, want ErrInvalid with %q", in, err, text)
		}
	}
}

// One blob on two different parents (the same top layer over two bases):
// the bytes do not depend on the order the roots were added, and reading
// them back and marshalling again gives them unchanged.
func TestMarshalTiedLayers(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, z := layer(1, at), layer(2, at), layer(3, at)
	r1, r2 := cachefmt.RecordDigest(digest.FromString("r1"), 0), cachefmt.RecordDigest(digest.FromString("r2"), 0)
	marshal := func(first, second digest.Digest, fc, sc []ocispec.Descriptor) []byte {
		c := cachefmt.NewChains()
		c.AddRoot(first, cachefmt.Chain{Layers: fc, CreatedAt: at})
		c.AddRoot(second, cachefmt.Chain{Layers: sc, CreatedAt: at})
		cfg, _, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	one := marshal(r1, r2, []ocispec.Descriptor{a, z}, []ocispec.Descriptor{b, z})
	two := marshal(r2, r1, []ocispec.Descriptor{b, z}, []ocispec.Descriptor{a, z})
	if !bytes.Equal(one, two) {
		t.Errorf("the order of AddRoot changed the config:\n%s\n%s", one, two)
	}
	blobs := cachefmt.Manifest{Layers: []ocispec.Descriptor{a, b, z}}.Blobs()
	chains, err := cachefmt.ParseConfig(one, blobs)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := chains.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(cfg)
	if !bytes.Equal(again, one) {
		t.Errorf("parse and marshal changed the config:\n%s\n%s", again, one)
	}
}
