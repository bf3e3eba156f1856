package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Materialize writes the root filesystem of layers into dir as plain files
// (whiteouts applied as deletions), reading each blob from this node's
// content store or, when it lacks one, from source. Every blob and layer is
// verified. It needs no mount and no snapshot. (Export writes a snapshot
// this node has without reading a blob.)
func (s *Store) Materialize(ctx context.Context, layers []events.Layer, dir string, source BlobSource) error {
	return materialize(ctx, layers, dir, BlobSourceFunc(func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
		return s.openBlob(ctx, d, source)
	}))
}

// Materialize writes the root filesystem of layers into dir, as
// Store.Materialize does, reading every blob from source: a client's
// output with no store of its own. Every blob and layer is verified as it
// streams; dir is left with what was written when one fails, so write
// beside the destination and rename.
func Materialize(ctx context.Context, layers []events.Layer, dir string, source BlobSource) error {
	if source == nil {
		return errors.New("materialize: no blob source")
	}
	return materialize(ctx, layers, dir, source)
}

func materialize(ctx context.Context, layers []events.Layer, dir string, source BlobSource) error {
	for i, l := range layers {
		if err := l.Blob.Digest.Validate(); err != nil {
			return fmt.Errorf("layer %d: blob digest: %w", i, err)
		}
		if err := l.DiffID.Validate(); err != nil {
			return fmt.Errorf("layer %d: diffID: %w", i, err)
		}
		if l.Blob.Size < 0 {
			return fmt.Errorf("layer %d: negative blob size %d", i, l.Blob.Size)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: a root filesystem's top directory is world-readable, like /
		return err
	}
	for _, l := range layers {
		if err := materializeLayer(ctx, l, dir, source); err != nil {
			return err
		}
	}
	return nil
}

func materializeLayer(ctx context.Context, l events.Layer, dir string, source BlobSource) error {
	rc, err := source.Open(ctx, l.Blob)
	if err != nil {
		return fmt.Errorf("materialize %s: %w", l.Blob.Digest, err)
	}
	defer func() { _ = rc.Close() }()
	verified := &verifyingReader{r: io.LimitReader(rc, l.Blob.Size+1), v: l.Blob.Digest.Verifier(), want: l.Blob}
	diffID, _, err := applyLayer(ctx, target{root: dir, fresh: true}, verified, nil) // fresh: the first layer, when dir is empty
	if err != nil {
		// A truncated, oversized or corrupt blob is the likelier cause.
		if context.Cause(ctx) == nil {
			if verr := verified.drain(); verr != nil {
				return verr
			}
		}
		return fmt.Errorf("materialize %s: %w", l.Blob.Digest, err)
	}
	if err := verified.drain(); err != nil {
		return err
	}
	if diffID != l.DiffID {
		return fmt.Errorf("layer %s unpacks to %s, not its diffID %s: %w", l.Blob.Digest, diffID, l.DiffID, ErrVerify)
	}
	return nil
}

func (s *Store) openBlob(ctx context.Context, desc ocispec.Descriptor, source BlobSource) (io.ReadCloser, error) {
	if _, err := s.cs.Info(ctx, desc.Digest); err == nil {
		ra, err := s.cs.ReaderAt(ctx, desc)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{content.NewReader(ra), ra}, nil
	}
	if source == nil {
		return nil, fmt.Errorf("blob %s is not on this node and no source was given", desc.Digest)
	}
	return source.Open(ctx, desc)
}

// verifyingReader hashes what passes through; check compares at the end.
type verifyingReader struct {
	r io.Reader
	v interface {
		io.Writer
		Verified() bool
	}
	n    int64
	want ocispec.Descriptor
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	_, _ = v.v.Write(p[:n])
	return n, err
}

// drain reads the rest of the blob and checks it.
func (v *verifyingReader) drain() error {
	if _, err := io.Copy(io.Discard, v); err != nil {
		return fmt.Errorf("read %s: %w", v.want.Digest, err)
	}
	return v.check()
}

func (v *verifyingReader) check() error {
	if v.n != v.want.Size || !v.v.Verified() {
		return fmt.Errorf("blob %s: got %d bytes with another digest or size (want %d): %w", v.want.Digest, v.n, v.want.Size, ErrVerify)
	}
	return nil
}
