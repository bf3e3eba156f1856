package ocilayout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// copyBufferSize is the chunk WriteBlob reads at a time; ctx is checked
// between chunks.
const copyBufferSize = 32 << 10

// validateDescriptor checks what the blob methods need of a descriptor: a
// digest of an available algorithm with a well-formed encoding (which
// also makes it safe to use in a path) and a non-negative size.
func validateDescriptor(desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w: %w", desc.Digest, ErrInvalid, err)
	}
	if desc.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d: %w", desc.Digest, desc.Size, ErrInvalid)
	}
	return nil
}

// blobPath is where the blob of d lives; d must be valid.
func (l *Layout) blobPath(d digest.Digest) string {
	return l.path(BlobsDir, d.Algorithm().String(), d.Encoded())
}

// Has reports whether the blob desc names is stored: a regular file under
// its final name with desc.Size bytes. It does not hash the file; WriteBlob
// verified it when it was written.
//
// Errors: ErrInvalid for a malformed digest or negative size; the cause of
// ctx's cancellation; otherwise the file system's error (an absent blob is
// (false, nil), not an error).
func (l *Layout) Has(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if err := validateDescriptor(desc); err != nil {
		return false, fmt.Errorf("has blob: %w", err)
	}
	if err := checkContext(ctx, "has blob "+desc.Digest.String()); err != nil {
		return false, err
	}
	fi, err := os.Stat(l.blobPath(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("has blob %s: %w", desc.Digest, err)
	}
	return fi.Mode().IsRegular() && fi.Size() == desc.Size, nil
}

// WriteBlob stores the blob desc names, reading its content from r. When the
// blob is already stored (as Has reports) it returns (false, nil) without
// reading r. Otherwise it streams at most desc.Size+1 bytes of r into a
// dot-file in blobs/<algorithm>/, hashing as it goes, checks size and
// digest, and renames the file to the blob's final name; written is then
// true. On any failure the temporary file is removed, so no file under the
// blob's final name ever holds other content. r is not closed.
//
// Errors: ErrInvalid for a malformed digest or negative size; ErrVerify when
// r yields fewer or more than desc.Size bytes or content of another digest;
// the cause of ctx's cancellation (checked between chunks); r's error;
// otherwise the file system's error.
func (l *Layout) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) (written bool, err error) {
	if err := validateDescriptor(desc); err != nil {
		return false, fmt.Errorf("write blob: %w", err)
	}
	has, err := l.Has(ctx, desc)
	if err != nil || has {
		return false, err
	}
	dir := l.path(BlobsDir, desc.Digest.Algorithm().String())
	if err := mkdirAll(dir); err != nil {
		return false, fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	tmp, err := createTemp(dir, desc.Digest.Encoded(), blobPerm)
	if err != nil {
		return false, fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()

	h := desc.Digest.Algorithm().Hash()
	n, err := copyContext(ctx, io.MultiWriter(tmp, h), io.LimitReader(r, plusOne(desc.Size)))
	if err != nil {
		return false, fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	if n != desc.Size {
		return false, fmt.Errorf("write blob %s: %s bytes, want %d: %w", desc.Digest, sizeText(n, desc.Size), desc.Size, ErrVerify)
	}
	if got := digest.NewDigest(desc.Digest.Algorithm(), h); got != desc.Digest {
		return false, fmt.Errorf("write blob %s: content has digest %s: %w", desc.Digest, got, ErrVerify)
	}
	// No fsync: the index is written last, atomically and fsynced, and a
	// blob lost to a power cut (missing or short, which Has and ReadBlob
	// detect) is simply exported again. A process crash loses nothing the
	// kernel already holds.
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	if err := checkContext(ctx, "write blob "+desc.Digest.String()); err != nil {
		return false, err
	}
	// A concurrent writer of the same blob may have renamed its copy into
	// place already; replacing it with identical bytes is harmless.
	if err := os.Rename(tmp.Name(), l.blobPath(desc.Digest)); err != nil {
		return false, fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	committed = true
	return true, nil
}

// WriteBlobBytes is WriteBlob with the content in memory.
//
// Errors: as WriteBlob's.
func (l *Layout) WriteBlobBytes(ctx context.Context, desc ocispec.Descriptor, data []byte) (written bool, err error) {
	return l.WriteBlob(ctx, desc, bytes.NewReader(data))
}

// OpenBlob opens the stored blob desc names for reading. It does not verify
// the content; the caller closes the reader.
//
// Errors: ErrInvalid for a malformed digest or negative size, or when the
// blob's name is not a regular file; ErrNotFound when the blob is absent;
// the cause of ctx's cancellation; otherwise the file system's error.
func (l *Layout) OpenBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	f, _, err := l.openBlob(ctx, desc)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (l *Layout) openBlob(ctx context.Context, desc ocispec.Descriptor) (*os.File, fs.FileInfo, error) {
	if err := validateDescriptor(desc); err != nil {
		return nil, nil, fmt.Errorf("open blob: %w", err)
	}
	if err := checkContext(ctx, "open blob "+desc.Digest.String()); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(l.blobPath(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("open blob %s in %s: %w", desc.Digest, l.root, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open blob %s: %w", desc.Digest, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file: %w", ErrInvalid)
	}
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("open blob %s: %w", desc.Digest, err)
	}
	return f, fi, nil
}

// ReadBlob reads the whole of a small stored blob (a manifest, an index, a
// cache config) and verifies its size and digest. A descriptor whose size
// exceeds max is refused before anything is opened.
//
// Errors: *TooLargeError (which matches ErrInvalid) when desc.Size > max;
// ErrInvalid for a malformed digest or negative size; ErrNotFound when the
// blob is absent; ErrVerify when the stored content's size or digest differs
// from desc; the cause of ctx's cancellation; otherwise the file system's
// error.
func (l *Layout) ReadBlob(ctx context.Context, desc ocispec.Descriptor, maxSize int64) ([]byte, error) {
	if desc.Size > maxSize {
		return nil, &TooLargeError{Digest: desc.Digest, Size: desc.Size, Max: maxSize}
	}
	f, fi, err := l.openBlob(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	if fi.Size() != desc.Size {
		return nil, fmt.Errorf("read blob %s: %d bytes stored, want %d: %w", desc.Digest, fi.Size(), desc.Size, ErrVerify)
	}
	// The file's size bounds the allocation, whatever desc claims.
	data := make([]byte, desc.Size)
	if _, err := io.ReadFull(f, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read blob %s: shorter than %d bytes: %w", desc.Digest, desc.Size, ErrVerify)
		}
		return nil, fmt.Errorf("read blob %s: %w", desc.Digest, err)
	}
	var extra [1]byte
	if n, _ := f.Read(extra[:]); n > 0 {
		return nil, fmt.Errorf("read blob %s: longer than %d bytes: %w", desc.Digest, desc.Size, ErrVerify)
	}
	if got := desc.Digest.Algorithm().FromBytes(data); got != desc.Digest {
		return nil, fmt.Errorf("read blob %s: content has digest %s: %w", desc.Digest, got, ErrVerify)
	}
	return data, nil
}

// copyContext copies src to dst like io.Copy, checking ctx before each
// read, and returns the number of bytes written.
func copyContext(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, copyBufferSize)
	var n int64
	for {
		if err := context.Cause(ctx); err != nil {
			return n, err
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// plusOne is size+1, the read limit that detects content longer than size,
// saturating at math.MaxInt64.
func plusOne(size int64) int64 {
	if size == math.MaxInt64 {
		return size
	}
	return size + 1
}

// sizeText words a read count for an error: "more than <want>" when the
// limit of want+1 was hit, the count otherwise.
func sizeText(n, want int64) string {
	if n > want {
		return fmt.Sprintf("more than %d", want)
	}
	return fmt.Sprintf("%d", n)
}
