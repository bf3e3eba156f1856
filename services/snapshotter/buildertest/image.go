package buildertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// File is a regular file of a layer.
type File struct {
	// Data is its content.
	Data []byte
	// Mode is its permission bits; zero means 0644.
	Mode os.FileMode
}

// Layer is a layer's files by path ("etc/marker"); parent directories
// are added.
type Layer map[string]File

// Image is an image pushed to a registry.
type Image struct {
	// Ref is its reference, HOST/REPO:TAG.
	Ref string
	// Manifest is its manifest's descriptor.
	Manifest ocispec.Descriptor
	// Layers are its layers' descriptors, bottom first.
	Layers []ocispec.Descriptor
	// Config is its config's descriptor.
	Config ocispec.Descriptor
}

// PushImage pushes an OCI image of layers (bottom first) for this host's
// platform to reg as repo:tag.
func PushImage(t testing.TB, reg *registrytest.Registry, repo, tag string, layers ...Layer) Image {
	t.Helper()
	img := Image{Ref: reg.Host() + "/" + repo + ":" + tag}
	var diffIDs []digest.Digest
	for _, l := range layers {
		blob, diffID := layerBlob(t, l)
		d := reg.PushBlob(t, repo, blob)
		img.Layers = append(img.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(blob))})
		diffIDs = append(diffIDs, diffID)
	}
	created := time.Unix(0, 0).UTC()
	cfg, err := json.Marshal(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/bin"}, WorkingDir: "/"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: reg.PushBlob(t, repo, cfg), Size: int64(len(cfg))}
	man, err := json.Marshal(ocispec.Manifest{
		Versioned: ocispecs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.Config,
		Layers:    img.Layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Manifest = reg.PushManifest(t, repo, tag, ocispec.MediaTypeImageManifest, man)
	return img
}

// layerBlob returns the gzip tar of l and the tar's digest (its diffID).
func layerBlob(t testing.TB, l Layer) ([]byte, digest.Digest) {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	dirs := map[string]bool{}
	names := make([]string, 0, len(l))
	for name := range l {
		names = append(names, name)
	}
	slices.Sort(names)
	epoch := time.Unix(0, 0)
	for _, name := range names {
		var parents []string
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			parents = append(parents, d)
		}
		slices.Reverse(parents)
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				t.Fatal(err)
			}
		}
		f := l[name]
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: int64(len(f.Data)), ModTime: epoch}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes(), digest.FromBytes(tarBuf.Bytes())
}

// copySource is the program Tool builds: `copy SRC DST` copies a file, and
// `copy SRC` prints it. The test images have no shell, so a RUN that reads
// a file of the image runs this, in exec form.
const copySource = `package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: copy SRC [DST]")
		os.Exit(2)
	}
	in, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := os.Stdout
	if len(os.Args) == 3 {
		if out, err = os.Create(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if _, err := io.Copy(out, in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := out.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

// CopyTool returns a static executable (CGO_ENABLED=0, built here with the go
// command) that copies a file: `copy SRC DST`, or `copy SRC` to print it.
// Put it in a layer (mode 0755) to RUN it in exec form.
func CopyTool(t testing.TB) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(copySource), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module copy\n\ngo 1.22\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "copy", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the copy tool: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "copy"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
