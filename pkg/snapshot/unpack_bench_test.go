//go:build linux

package snapshot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// BenchmarkUnpackImage unpacks the layers of one image the pull benchmark
// generated (bench/images_test.go: $STEVEDORE_UNPACK_IMAGE is its
// directory, <i>.tar.gz and image.json) into a fresh overlayfs store in
// $TMPDIR, the blobs read from files: the snapshotter's own work, without
// the network, the bus or a registry, for a CPU profile
// (-cpuprofile) and its time per image. Export then writes the root
// filesystem from the snapshot (BenchmarkUnpackImage/export).
func BenchmarkUnpackImage(b *testing.B) {
	layers, src := generatedImage(b)
	kind := snapshot.KindOverlay
	if os.Getenv("STEVEDORE_UNPACK_NATIVE") != "" {
		kind = snapshot.KindNative
	}
	for b.Loop() {
		b.StopTimer()
		root := b.TempDir()
		s, err := snapshot.Open(b.Context(), root, kind)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := s.Unpack(b.Context(), snapshot.Request{Layers: layers, Source: src})
		if err != nil {
			b.Fatal(err)
		}
		if os.Getenv("STEVEDORE_UNPACK_EXPORT") != "" {
			if err := s.Export(b.Context(), res.Key, filepath.Join(root, "rootfs")); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		_ = s.Close()
		_ = os.RemoveAll(root)
		b.StartTimer()
	}
}

// generatedImage reads the layers of the generated image
// $STEVEDORE_UNPACK_IMAGE names and opens its blobs from their files; it
// needs root, since layers are extracted with their owners.
func generatedImage(b *testing.B) ([]events.Layer, snapshot.BlobSource) {
	b.Helper()
	testenv.Root(b, "layers are extracted with their owners")
	dir := os.Getenv("STEVEDORE_UNPACK_IMAGE")
	if dir == "" {
		testenv.Lack(b, "STEVEDORE_UNPACK_IMAGE names no generated image directory (make bench-pull generates them under /dev/shm/stevedore-bench-images)")
	}
	data, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		b.Fatal(err)
	}
	var img struct {
		Layers []struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
			DiffID digest.Digest `json:"diffID"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(data, &img); err != nil {
		b.Fatal(err)
	}
	var layers []events.Layer
	files := map[digest.Digest]string{}
	for i, l := range img.Layers {
		layers = append(layers, events.Layer{Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l.Digest, Size: l.Size}, DiffID: l.DiffID})
		files[l.Digest] = filepath.Join(dir, strconv.Itoa(i)+".tar.gz")
	}
	src := snapshot.BlobSourceFunc(func(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
		return os.Open(files[d.Digest])
	})
	return layers, src
}

// unpackedImage unpacks the generated image (generatedImage) once into a
// fresh overlayfs store, closed when the benchmark ends.
func unpackedImage(b *testing.B) (*snapshot.Store, snapshot.Result) {
	b.Helper()
	layers, src := generatedImage(b)
	s, err := snapshot.Open(b.Context(), b.TempDir(), snapshot.KindOverlay)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	res, err := s.Unpack(b.Context(), snapshot.Request{Layers: layers, Source: src})
	if err != nil {
		b.Fatal(err)
	}
	return s, res
}

// BenchmarkApplyTar applies the root filesystem of the image
// $STEVEDORE_UNPACK_IMAGE names (unpacked once, then streamed by WriteTar
// into memory) to a new empty directory, as `pull --nats --output` applies
// the stream it receives: with ApplyTar, and with containerd's
// archive.Apply for comparison.
func BenchmarkApplyTar(b *testing.B) {
	s, res := unpackedImage(b)
	var stream bytes.Buffer
	if err := s.WriteTar(b.Context(), res.Key, &stream); err != nil {
		b.Fatal(err)
	}
	for _, apply := range []struct {
		name string
		fn   func(ctx context.Context, dir string, r io.Reader) error
	}{
		{"ApplyTar", snapshot.ApplyTar},
		{"archive.Apply", func(ctx context.Context, dir string, r io.Reader) error {
			_, err := archive.Apply(ctx, dir, r)
			return err
		}},
	} {
		b.Run(apply.name, func(b *testing.B) {
			b.SetBytes(int64(stream.Len()))
			for b.Loop() {
				b.StopTimer()
				out := b.TempDir()
				b.StartTimer()
				if err := apply.fn(b.Context(), out, bytes.NewReader(stream.Bytes())); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = os.RemoveAll(out)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkWriteTar streams the root filesystem of the image
// $STEVEDORE_UNPACK_IMAGE names (unpacked once) as WriteTar does for
// `pull --nats --output`, into io.Discard.
func BenchmarkWriteTar(b *testing.B) {
	s, res := unpackedImage(b)
	for b.Loop() {
		if err := s.WriteTar(b.Context(), res.Key, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
