package snapshot

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/readahead"
	digest "github.com/opencontainers/go-digest"
)

// target is where a layer is extracted and how.
type target struct {
	// root is the directory the tar stream is applied to.
	root string
	// opts are the archive options: overlay whiteouts and parents.
	opts []archive.ApplyOpt
	// names, when not nil, records the name of every entry applied (a
	// layer extracted without its parent: see rebase.go).
	names *entryNames
	// fresh says root is a snapshot prepared without a parent, which
	// applyFresh extracts into (when it is indeed empty) rather than
	// containerd's archive.Apply; overlayWhiteouts then says whiteouts
	// become overlayfs's (opts say the same to archive.Apply).
	fresh, overlayWhiteouts bool
}

// applyTarget turns the mounts of an active snapshot into a directory to
// write into without mounting anything: the source of a bind mount
// (native, or an overlay snapshot without parents), or the upperdir of an
// overlay mount, whose whiteouts become overlay whiteouts.
func applyTarget(mounts []mount.Mount) (target, error) {
	if len(mounts) != 1 {
		return target{}, fmt.Errorf("unexpected %d mounts for an active snapshot", len(mounts))
	}
	m := mounts[0]
	switch m.Type {
	case "bind", "rbind":
		return target{root: m.Source}, nil
	case "overlay":
		var upper string
		var lowers []string
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				upper = v
			}
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				lowers = strings.Split(v, ":")
			}
		}
		if upper == "" {
			return target{}, fmt.Errorf("overlay mount without upperdir: %v", m.Options)
		}
		return target{root: upper, opts: []archive.ApplyOpt{
			archive.WithConvertWhiteout(archive.OverlayConvertWhiteout),
			archive.WithParents(lowers),
		}}, nil
	}
	return target{}, fmt.Errorf("unsupported mount type %q", m.Type)
}

// Read-ahead of the layer pipeline: how many buffers of what size each
// stage may run ahead of the next.
const (
	aheadBuffers = 4
	aheadSize    = 1 << 20
)

// applyLayer decompresses rd (gzip, zstd or plain tar, told apart by their
// magic bytes), applies the tar stream to dst, reads the stream to its end
// and returns its digest (the diffID) and size.
//
// The work runs as three stages, each in its own goroutine with a bounded
// read-ahead between them, so that a layer uses more than one core: reading
// rd (for a download: the network, the content store writer and the blob's
// digest), decompressing and hashing the tar stream, and writing files.
// When applyLayer returns, no stage is running and rd has been read to its
// end unless an error stopped it.
//
// lb, when not nil, counts the layer's entries against its limits: an
// entry past one is refused before it is written, and so is a tar stream
// longer than lb allows.
func applyLayer(ctx context.Context, dst target, rd io.Reader, lb *layerBudget) (digest.Digest, int64, error) {
	compressed, err := readahead.NewReaderSize(rd, aheadBuffers, aheadSize)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = compressed.Close() }()
	plain, err := decompress(ctx, compressed)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = plain.Close() }()
	h := sha256.New()
	counter := &byteCounter{max: lb.streamLimit()}
	var filter func(*tar.Header) (bool, error)
	opts := dst.opts
	if lb != nil || dst.names != nil {
		filter = func(hdr *tar.Header) (bool, error) {
			if lb != nil {
				if ok, err := lb.filter(hdr); !ok || err != nil {
					return ok, err
				}
			}
			if dst.names != nil {
				return dst.names.add(hdr)
			}
			return true, nil
		}
		opts = append(slices.Clone(opts), archive.WithFilter(filter))
	}
	tar, err := readahead.NewReaderSize(io.TeeReader(plain, io.MultiWriter(h, counter)), aheadBuffers, aheadSize)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = tar.Close() }()
	if dst.fresh && isEmptyDir(dst.root) {
		err = applyFresh(ctx, dst.root, tar, dst.overlayWhiteouts, filter)
	} else {
		_, err = archive.Apply(ctx, dst.root, tar, opts...)
	}
	if err != nil {
		return "", 0, err
	}
	// The tar end marker and padding count towards the diffID, and what
	// follows the compressed stream still belongs to the blob.
	if err := discard(tar); err != nil {
		return "", 0, err
	}
	if err := tar.Close(); err != nil { // the hashing stage has stopped
		return "", 0, err
	}
	if err := plain.Close(); err != nil { // nothing else reads compressed
		return "", 0, err
	}
	if err := discard(compressed); err != nil {
		return "", 0, err
	}
	return digest.NewDigest(digest.SHA256, h), counter.n, nil
}

// ApplyTar applies the tar stream r (a root filesystem, as WriteTar
// writes one) to dir with the result of containerd's archive.Apply: names
// bounded to dir, hard links inside it, whiteouts removing what they name.
// When dir is an empty directory that nothing else writes meanwhile (a new
// temporary directory), it does so without looking at the disk before
// each entry (see applyFresh); otherwise it is archive.Apply.
//
// Errors: the stream's, an archive no extraction may apply, the file
// system's.
func ApplyTar(ctx context.Context, dir string, r io.Reader) error {
	if isEmptyDir(dir) {
		return applyFresh(ctx, dir, r, false, nil)
	}
	_, err := archive.Apply(ctx, dir, r)
	return err
}

// discard reads r to its end. (A read-ahead reader's WriteTo answers
// io.EOF once it has already reached the end, which io.Copy passes on.)
func discard(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// byteCounter counts what passes; past max (when positive) it fails with
// ErrLimit.
type byteCounter struct{ n, max int64 }

func (c *byteCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.max > 0 && c.n > c.max {
		return 0, &LimitError{What: fmt.Sprintf("a layer's tar stream is longer than %d bytes (twice the snapshotter's layer size limit and 64 MiB)", c.max)}
	}
	return len(p), nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress returns the uncompressed stream of a layer blob, whatever its
// compression; the media type is not trusted (Docker's and OCI's differ,
// and some registries lie). Once the stream is closed, nothing reads rd;
// ctx ending ends a decompressing process.
func decompress(ctx context.Context, rd io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rd, 64<<10)
	head, err := br.Peek(4)
	if err != nil && len(head) == 0 {
		if err == io.EOF {
			return io.NopCloser(br), nil // empty blob: the apply reports it
		}
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		// igzip in a process of its own when the node has it, which
		// decompresses fastest and on another core; Go's otherwise.
		if path := gunzipCommand(); path != "" {
			s, err := startGunzip(ctx, path, br)
			if err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
			return s, nil
		}
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}
