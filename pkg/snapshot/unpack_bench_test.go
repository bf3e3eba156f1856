//go:build linux

package snapshot_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

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
