package exporter

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
)

// compressionOf names the compression of a layer media type.
func compressionOf(mediaType string) string {
	switch {
	case strings.HasSuffix(mediaType, "gzip"):
		return cachefmt.CompressionGzip
	case strings.HasSuffix(mediaType, "zstd"):
		return cachefmt.CompressionZstd
	}
	return cachefmt.CompressionUncompressed
}

// mediaTypeFor is the OCI layer media type of a compression, in Docker
// form when oci is false.
func mediaTypeFor(c string, oci bool) string {
	t := ocispec.MediaTypeImageLayer
	switch c {
	case cachefmt.CompressionGzip:
		t = ocispec.MediaTypeImageLayerGzip
	case cachefmt.CompressionZstd:
		t = ocispec.MediaTypeImageLayerZstd
	}
	return cachefmt.ConvertLayerMediaType(t, oci)
}

// convert recompresses, for force-compression, every layer whose
// compression is not the target's: the converted blobs go into a scratch
// layout (removed when ctx's export ends, see cleanup) and replace the
// originals in chains and sources. The diffID of a converted layer is
// checked; it does not change, so neither do the records' keys.
func (h *Handler) convert(ctx context.Context, chains *cachefmt.Chains, sources map[digest.Digest]layerSource, target cachefmt.ExportTarget) (cleanup func(), err error) {
	var scratch *ocilayout.Layout
	cleanup = func() {
		if scratch != nil {
			_ = os.RemoveAll(scratch.Root())
		}
	}
	converted := map[digest.Digest]ocispec.Descriptor{}
	for _, it := range chains.Items() {
		for ri := range it.Results {
			layers := it.Results[ri].Layers
			for li, d := range layers {
				if compressionOf(d.MediaType) == target.Compression {
					continue
				}
				nd, ok := converted[d.Digest]
				if !ok {
					if scratch == nil {
						dir, err := os.MkdirTemp("", "stevedore-convert-")
						if err != nil {
							return cleanup, err
						}
						if scratch, err = ocilayout.Create(dir); err != nil {
							return cleanup, err
						}
					}
					src := sources[d.Digest]
					if nd, err = h.recompress(ctx, scratch, d, src, target); err != nil {
						return cleanup, err
					}
					converted[d.Digest] = nd
					sources[nd.Digest] = layerSource{layer: events.Layer{Blob: nd, DiffID: src.layer.DiffID},
						locations: []events.BlobLocation{{Layout: scratch.Root()}}}
				}
				layers[li] = nd
			}
		}
	}
	return cleanup, nil
}

// recompress writes the layer d (read from src) compressed as the target
// asks into scratch and returns its descriptor.
func (h *Handler) recompress(ctx context.Context, scratch *ocilayout.Layout, d ocispec.Descriptor, src layerSource, target cachefmt.ExportTarget) (ocispec.Descriptor, error) {
	rc, err := h.open(ctx, src.locations, d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer func() { _ = rc.Close() }()
	verify := d.Digest.Verifier()
	counted := &countWriter{}
	plain, err := compression.DecompressStream(io.TeeReader(io.LimitReader(rc, d.Size+1), io.MultiWriter(verify, counted)))
	if err != nil {
		return ocispec.Descriptor{}, failure.Invalid(fmt.Errorf("layer %s: %w", d.Digest, err))
	}
	defer func() { _ = plain.Close() }()

	tmp, err := os.CreateTemp(scratch.Root(), ".convert-")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	defer func() { _ = tmp.Close() }()
	out := digest.SHA256.Digester()
	sized := &countWriter{}
	dst := io.MultiWriter(tmp, out.Hash(), sized)
	diff := sha256.New()
	var zw io.WriteCloser
	switch target.Compression {
	case cachefmt.CompressionGzip:
		level := gzip.DefaultCompression
		if target.CompressionLevel != nil {
			level = *target.CompressionLevel
		}
		if zw, err = gzip.NewWriterLevel(dst, level); err != nil {
			return ocispec.Descriptor{}, failure.Invalid(fmt.Errorf("compression-level: %w", err))
		}
	case cachefmt.CompressionZstd:
		level := zstd.SpeedDefault
		if target.CompressionLevel != nil {
			level = zstd.EncoderLevelFromZstd(*target.CompressionLevel)
		}
		if zw, err = zstd.NewWriter(dst, zstd.WithEncoderLevel(level)); err != nil {
			return ocispec.Descriptor{}, err
		}
	default:
		zw = nopWriteCloser{dst}
	}
	if _, err := io.Copy(io.MultiWriter(zw, diff), plain); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("recompress %s: %w", d.Digest, err)
	}
	if err := zw.Close(); err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil { // the blob's tail, for its digest
		return ocispec.Descriptor{}, err
	}
	if counted.n != d.Size || !verify.Verified() {
		return ocispec.Descriptor{}, failure.Invalid(fmt.Errorf("layer %s: the blob read does not match its digest and size", d.Digest))
	}
	if got := digest.NewDigest(digest.SHA256, diff); got != src.layer.DiffID {
		return ocispec.Descriptor{}, failure.Invalid(fmt.Errorf("layer %s unpacks to %s, not its diffID %s", d.Digest, got, src.layer.DiffID))
	}
	nd := ocispec.Descriptor{MediaType: mediaTypeFor(target.Compression, target.OCIMediaTypes), Digest: out.Digest(), Size: sized.n,
		Annotations: map[string]string{cachefmt.AnnotationUncompressed: src.layer.DiffID.String()}}
	if v, ok := d.Annotations[cachefmt.AnnotationCreatedAt]; ok {
		nd.Annotations[cachefmt.AnnotationCreatedAt] = v
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := scratch.WriteBlob(ctx, nd, tmp); err != nil {
		return ocispec.Descriptor{}, errors.Join(fmt.Errorf("store converted %s", d.Digest), err)
	}
	return nd, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
