package ocilayout

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestBlobRoundTrip: a blob written through WriteBlob (several copy chunks
// long, in sha256 and sha512) is reported by Has, read back byte for byte
// by ReadBlob and OpenBlob, and stored at blobs/<alg>/<encoded> with no
// temporary file left; writing it again reports written=false.
func TestBlobRoundTrip(t *testing.T) {
	t.Parallel()
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(alg.String(), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			l := newLayout(t)
			data := make([]byte, 3*copyBufferSize+17)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: alg.FromBytes(data), Size: int64(len(data))}

			if has, err := l.Has(ctx, desc); err != nil || has {
				t.Fatalf("Has before write = %v, %v; want false, nil", has, err)
			}
			written, err := l.WriteBlob(ctx, desc, bytes.NewReader(data))
			if err != nil || !written {
				t.Fatalf("WriteBlob = %v, %v; want true, nil", written, err)
			}
			if has, err := l.Has(ctx, desc); err != nil || !has {
				t.Fatalf("Has after write = %v, %v; want true, nil", has, err)
			}
			got, err := l.ReadBlob(ctx, desc, desc.Size)
			if err != nil {
				t.Fatalf("ReadBlob: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Error("ReadBlob returned other bytes")
			}
			rc, err := l.OpenBlob(ctx, desc)
			if err != nil {
				t.Fatalf("OpenBlob: %v", err)
			}
			got, err = io.ReadAll(rc)
			if cerr := rc.Close(); err == nil {
				err = cerr
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("OpenBlob content differs (err %v)", err)
			}
			dir := filepath.Join(l.Root(), BlobsDir, alg.String())
			if diff := cmp.Diff([]string{desc.Digest.Encoded()}, dirEntries(t, dir)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", dir, diff)
			}
			written, err = l.WriteBlobBytes(ctx, desc, data)
			if err != nil || written {
				t.Errorf("second WriteBlobBytes = %v, %v; want false, nil", written, err)
			}
		})
	}
}

// TestWriteBlobEmpty: the empty blob (size 0) is written and read back.
func TestWriteBlobEmpty(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	desc := descOf("application/octet-stream", nil)
	if written, err := l.WriteBlobBytes(ctx, desc, nil); err != nil || !written {
		t.Fatalf("WriteBlobBytes = %v, %v", written, err)
	}
	got, err := l.ReadBlob(ctx, desc, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
}

// TestWriteBlobVerify: a reader with other content, fewer bytes or more
// bytes than the descriptor says fails with ErrVerify and leaves nothing in
// blobs/sha256, neither the blob nor a temporary file. The oversized reader
// is endless: WriteBlob must stop after Size+1 bytes.
func TestWriteBlobVerify(t *testing.T) {
	t.Parallel()
	data := []byte("hello, layout")
	desc := descOf("application/octet-stream", data)
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"wrong digest", bytes.NewReader([]byte("HELLO, LAYOUT"))},
		{"too short", bytes.NewReader(data[:len(data)-1])},
		{"empty", bytes.NewReader(nil)},
		{"one byte too long", bytes.NewReader(append(bytes.Clone(data), 'x'))},
		{"endless", io.MultiReader(bytes.NewReader(data), endless{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			l := newLayout(t)
			written, err := l.WriteBlob(ctx, desc, tc.r)
			if !errors.Is(err, ErrVerify) || written {
				t.Fatalf("WriteBlob = %v, %v; want false, ErrVerify", written, err)
			}
			if names := dirEntries(t, filepath.Join(l.Root(), BlobsDir, "sha256")); len(names) != 0 {
				t.Errorf("blobs/sha256 holds %q after a failed write", names)
			}
			if has, err := l.Has(ctx, desc); err != nil || has {
				t.Errorf("Has = %v, %v; want false, nil", has, err)
			}
		})
	}
}

// endless is a reader that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	return len(p), nil
}

// TestWriteBlobExistingDoesNotRead: when the blob is stored, WriteBlob
// returns (false, nil) without touching the reader.
func TestWriteBlobExistingDoesNotRead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	data := []byte(`{"schemaVersion":2}`)
	desc := descOf(ocispec.MediaTypeImageManifest, data)
	if _, err := l.WriteBlobBytes(ctx, desc, data); err != nil {
		t.Fatal(err)
	}
	written, err := l.WriteBlob(ctx, desc, failReader{t})
	if err != nil || written {
		t.Fatalf("WriteBlob = %v, %v; want false, nil", written, err)
	}
}

// failReader fails the test when read.
type failReader struct{ t *testing.T }

func (r failReader) Read([]byte) (int, error) {
	r.t.Error("reader was read")
	return 0, io.ErrUnexpectedEOF
}

// TestWriteBlobReplacesShort: a file under the blob's name with the wrong
// size (say, left short by a power cut) is not taken for the blob: Has
// reports false and WriteBlob replaces it.
func TestWriteBlobReplacesShort(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	data := []byte("the real content")
	desc := descOf("application/octet-stream", data)
	writeFile(t, l.blobPath(desc.Digest), "the real")
	if has, err := l.Has(ctx, desc); err != nil || has {
		t.Fatalf("Has = %v, %v; want false, nil", has, err)
	}
	if _, err := l.ReadBlob(ctx, desc, 1<<20); !errors.Is(err, ErrVerify) {
		t.Errorf("ReadBlob of a short blob = %v, want ErrVerify", err)
	}
	if written, err := l.WriteBlobBytes(ctx, desc, data); err != nil || !written {
		t.Fatalf("WriteBlobBytes = %v, %v; want true, nil", written, err)
	}
	if got, err := l.ReadBlob(ctx, desc, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadBlob = %q, %v", got, err)
	}
}

// TestBlobInvalidDescriptor: every blob method rejects a malformed digest
// (including one that would escape the layout), an unavailable algorithm
// and a negative size with ErrInvalid, and creates nothing.
func TestBlobInvalidDescriptor(t *testing.T) {
	t.Parallel()
	good := digest.FromString("x")
	for _, tc := range []struct {
		name string
		desc ocispec.Descriptor
	}{
		{"empty digest", ocispec.Descriptor{Size: 1}},
		{"no algorithm", ocispec.Descriptor{Digest: digest.Digest(good.Encoded()), Size: 1}},
		{"path escape", ocispec.Descriptor{Digest: "sha256:../../../../etc/passwd", Size: 1}},
		{"short hex", ocispec.Descriptor{Digest: "sha256:abcd", Size: 1}},
		{"upper-case hex", ocispec.Descriptor{Digest: digest.Digest("sha256:" + "A" + good.Encoded()[1:]), Size: 1}},
		{"unknown algorithm", ocispec.Descriptor{Digest: "md5:d41d8cd98f00b204e9800998ecf8427e", Size: 1}},
		{"negative size", ocispec.Descriptor{Digest: good, Size: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			l := newLayout(t)
			if _, err := l.Has(ctx, tc.desc); !errors.Is(err, ErrInvalid) {
				t.Errorf("Has = %v, want ErrInvalid", err)
			}
			if _, err := l.WriteBlob(ctx, tc.desc, failReader{t}); !errors.Is(err, ErrInvalid) {
				t.Errorf("WriteBlob = %v, want ErrInvalid", err)
			}
			if _, err := l.OpenBlob(ctx, tc.desc); !errors.Is(err, ErrInvalid) {
				t.Errorf("OpenBlob = %v, want ErrInvalid", err)
			}
			if _, err := l.ReadBlob(ctx, tc.desc, 1<<20); !errors.Is(err, ErrInvalid) {
				t.Errorf("ReadBlob = %v, want ErrInvalid", err)
			}
			if err := l.Tag(ctx, tc.desc, "t"); !errors.Is(err, ErrInvalid) {
				t.Errorf("Tag = %v, want ErrInvalid", err)
			}
			if names := dirEntries(t, filepath.Join(l.Root(), BlobsDir)); len(names) != 0 {
				t.Errorf("blobs holds %q", names)
			}
		})
	}
}

// TestReadBlobErrors: ReadBlob refuses a blob larger than the limit with
// BuildKit's message (matching ErrInvalid) before opening anything, reports
// an absent blob as ErrNotFound and stored content of the right size but
// the wrong digest as ErrVerify; OpenBlob reports an absent blob as
// ErrNotFound.
func TestReadBlobErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	data := []byte("0123456789")
	desc := descOf("application/octet-stream", data)

	_, err := l.ReadBlob(ctx, desc, 9)
	if want := "blob " + desc.Digest.String() + " is too large (10 > 9)"; err == nil || err.Error() != want {
		t.Errorf("ReadBlob over the limit = %v, want %q", err, want)
	}
	var tooLarge *TooLargeError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &tooLarge) || tooLarge.Max != 9 || tooLarge.Size != 10 {
		t.Errorf("ReadBlob over the limit = %#v, want a *TooLargeError matching ErrInvalid", err)
	}
	if _, err := l.ReadBlob(ctx, desc, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob of an absent blob = %v, want ErrNotFound", err)
	}
	if _, err := l.OpenBlob(ctx, desc); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob of an absent blob = %v, want ErrNotFound", err)
	}
	writeFile(t, l.blobPath(desc.Digest), "9876543210") // same size, other content
	if has, err := l.Has(ctx, desc); err != nil || !has {
		t.Errorf("Has = %v, %v; want true (Has does not hash)", has, err)
	}
	if _, err := l.ReadBlob(ctx, desc, 10); !errors.Is(err, ErrVerify) {
		t.Errorf("ReadBlob of a corrupt blob = %v, want ErrVerify", err)
	}
}

// TestBlobContextCause: a cancelled ctx stops WriteBlob mid-stream with the
// cancellation's cause and leaves nothing behind; the other methods return
// the cause without doing anything.
func TestBlobContextCause(t *testing.T) {
	t.Parallel()
	l := newLayout(t)
	cause := errors.New("build cancelled")
	ctx, cancel := context.WithCancelCause(t.Context())
	data := bytes.Repeat([]byte("a"), 4*copyBufferSize)
	desc := descOf("application/octet-stream", data)
	r := &cancellingReader{r: bytes.NewReader(data), after: copyBufferSize, cancel: func() { cancel(cause) }}
	if _, err := l.WriteBlob(ctx, desc, r); !errors.Is(err, cause) {
		t.Fatalf("WriteBlob = %v, want the cause", err)
	}
	if names := dirEntries(t, filepath.Join(l.Root(), BlobsDir, "sha256")); len(names) != 0 {
		t.Errorf("blobs/sha256 holds %q", names)
	}
	if _, err := l.Has(ctx, desc); !errors.Is(err, cause) {
		t.Errorf("Has = %v, want the cause", err)
	}
	if _, err := l.ReadBlob(ctx, desc, math.MaxInt64); !errors.Is(err, cause) {
		t.Errorf("ReadBlob = %v, want the cause", err)
	}
	if _, err := l.Index(ctx); !errors.Is(err, cause) {
		t.Errorf("Index = %v, want the cause", err)
	}
	if err := l.Tag(ctx, desc, "t"); !errors.Is(err, cause) {
		t.Errorf("Tag = %v, want the cause", err)
	}
	if _, err := os.Stat(filepath.Join(l.Root(), IndexFile)); !os.IsNotExist(err) {
		t.Errorf("index.json exists after a cancelled Tag (%v)", err)
	}
}

// cancellingReader calls cancel once after bytes have been read.
type cancellingReader struct {
	r      io.Reader
	after  int
	n      int
	cancel func()
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if c.n >= c.after && c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	return n, err
}
