package ocilayout

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestGGCRReadsLayout: go-containerregistry's layout package, an
// independent reader, accepts a layout written here: a one-layer image
// built by hand, tagged, read back through layout.FromPath and ImageIndex,
// and checked with validate.Index (which reads and hashes every blob).
func TestGGCRReadsLayout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)

	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	content := []byte("hello from a layer\n")
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gzBuf bytes.Buffer
	zw := gzip.NewWriter(&gzBuf)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	layer := descOf(ocispec.MediaTypeImageLayerGzip, gzBuf.Bytes())

	config := mustJSON(t, ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tarBuf.Bytes())}},
	})
	configDesc := descOf(ocispec.MediaTypeImageConfig, []byte(config))
	manifest := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: configDesc, Layers: []ocispec.Descriptor{layer}}
	manifest.SchemaVersion = 2
	manifestJSON := mustJSON(t, manifest)
	manifestDesc := descOf(ocispec.MediaTypeImageManifest, []byte(manifestJSON))

	for _, b := range []struct {
		desc ocispec.Descriptor
		data []byte
	}{{layer, gzBuf.Bytes()}, {configDesc, []byte(config)}, {manifestDesc, []byte(manifestJSON)}} {
		if _, err := l.WriteBlobBytes(ctx, b.desc, b.data); err != nil {
			t.Fatalf("WriteBlobBytes %s: %v", b.desc.MediaType, err)
		}
	}
	if err := l.Tag(ctx, manifestDesc, "latest"); err != nil {
		t.Fatal(err)
	}

	p, err := layout.FromPath(l.Root())
	if err != nil {
		t.Fatalf("layout.FromPath: %v", err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatalf("ImageIndex: %v", err)
	}
	if err := validate.Index(ii); err != nil {
		t.Fatalf("validate.Index: %v", err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("ggcr sees %d manifests, want 1", len(im.Manifests))
	}
	got := im.Manifests[0]
	if got.Digest.String() != manifestDesc.Digest.String() || got.Size != manifestDesc.Size ||
		got.Annotations[AnnotationRefName] != "latest" {
		t.Errorf("ggcr's entry = %+v", got)
	}
	img, err := ii.Image(got.Digest)
	if err != nil {
		t.Fatalf("Image: %v", err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != manifestJSON {
		t.Errorf("ggcr's manifest bytes differ")
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("Layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(content), string(data)); diff != "" {
		t.Errorf("layer file (-want +got):\n%s", diff)
	}
	var cfg ocispec.Image
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rawCfg, &cfg); err != nil || cfg.OS != "linux" {
		t.Errorf("config = %s, %v", rawCfg, err)
	}
}
