//go:build linux

package snapshot_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"maps"
	"path"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// kinds are the snapshotters every Unpack test runs against.
var kinds = []snapshot.Kind{snapshot.KindNative, snapshot.KindOverlay}

// needKind ends a test that cannot run here (skipped, or failed under
// CI): extraction chowns files and makes device nodes (root), and the
// overlay snapshotter needs overlayfs.
func needKind(t *testing.T, kind snapshot.Kind) {
	t.Helper()
	testenv.Root(t, "layers are extracted with their owners and device nodes")
	if kind == snapshot.KindOverlay {
		testenv.Overlayfs(t)
	}
}

// openStore opens a store of kind in a new temp dir, closed at cleanup.
func openStore(t *testing.T, kind snapshot.Kind) *snapshot.Store {
	t.Helper()
	return openStoreAt(t, t.TempDir(), kind)
}

func openStoreAt(t *testing.T, root string, kind snapshot.Kind) *snapshot.Store {
	t.Helper()
	s, err := snapshot.Open(t.Context(), root, kind)
	if err != nil {
		t.Fatalf("Open(%s): %v", kind, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if s.Kind() != kind {
		t.Fatalf("Kind() = %s, want %s", s.Kind(), kind)
	}
	return s
}

// entry is one tar header (and body) of a test layer.
type entry struct {
	name         string
	typ          byte
	body         string
	mode         int64
	uid, gid     int
	mtime        int64
	link         string
	major, minor int64
	xattrs       map[string]string
}

// mtime is the modification time of every entry unless set otherwise.
const mtime = 1700000000

func file(name, body string, mode int64) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: mode, mtime: mtime}
}

func dir(name string, mode int64) entry {
	return entry{name: name + "/", typ: tar.TypeDir, mode: mode, mtime: mtime}
}

func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777, mtime: mtime}
}

// hardlink links name to target, with target's metadata, as tar writers do.
func hardlink(name string, target entry) entry {
	e := target
	e.name, e.typ, e.link, e.body = name, tar.TypeLink, target.name, ""
	return e
}

// whiteout deletes p from the layers below.
func whiteout(p string) entry {
	return file(path.Join(path.Dir(p), ".wh."+path.Base(p)), "", 0o644)
}

// opaque hides everything the layers below hold in dir.
func opaque(dir string) entry {
	return file(path.Join(dir, ".wh..wh..opq"), "", 0o644)
}

func chardev(name string, major, minor int64) entry {
	return entry{name: name, typ: tar.TypeChar, mode: 0o666, major: major, minor: minor, mtime: mtime}
}

func blockdev(name string, major, minor int64) entry {
	return entry{name: name, typ: tar.TypeBlock, mode: 0o660, major: major, minor: minor, mtime: mtime}
}

func fifo(name string) entry {
	return entry{name: name, typ: tar.TypeFifo, mode: 0o640, mtime: mtime}
}

// xattr gives the entry an extended attribute (a SCHILY.xattr PAX record).
func (e entry) xattr(name, value string) entry {
	e.xattrs = maps.Clone(e.xattrs)
	if e.xattrs == nil {
		e.xattrs = map[string]string{}
	}
	e.xattrs[name] = value
	return e
}

func (e entry) owner(uid, gid int) entry {
	e.uid, e.gid = uid, gid
	return e
}

// compression is how a test layer's blob is compressed.
type compression string

const (
	gzipped  compression = "gzip"
	zstdded  compression = "zstd"
	unpacked compression = "none"
)

// layer is a test layer: its descriptor, its tar and its blob.
type layer struct {
	events.Layer
	tar  []byte
	blob []byte
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: time.Unix(e.mtime, 0), Linkname: e.link, Devmajor: e.major, Devminor: e.minor,
			Format: tar.FormatPAX,
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("tar body %s: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t *testing.T, c compression, data []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case gzipped:
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), ocispec.MediaTypeImageLayerGzip
	case zstdded:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), ocispec.MediaTypeImageLayerZstd
	case unpacked:
		return bytes.Clone(data), ocispec.MediaTypeImageLayer
	}
	t.Fatalf("unknown compression %q", c)
	return nil, ""
}

func buildLayer(t *testing.T, c compression, entries ...entry) layer {
	t.Helper()
	return layerFromTar(t, c, tarOf(t, entries...))
}

func layerFromTar(t *testing.T, c compression, tarball []byte) layer {
	t.Helper()
	blob, mediaType := compress(t, c, tarball)
	return layer{
		Layer: events.Layer{
			Blob:   ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(blob), Size: int64(len(blob))},
			DiffID: digest.FromBytes(tarball),
		},
		tar:  tarball,
		blob: blob,
	}
}

func eventsOf(ls ...layer) []events.Layer {
	out := make([]events.Layer, len(ls))
	for i, l := range ls {
		out[i] = l.Layer
	}
	return out
}

// source serves blobs by digest and records what it is asked for.
type source struct {
	mu     sync.Mutex
	blobs  map[digest.Digest][]byte
	opens  map[digest.Digest]int
	order  []digest.Digest
	open   int // bodies open now
	openBy map[digest.Digest]int
	peak   int // most bodies open at once

	// body, when set, makes the body of a blob (nil: the plain bytes).
	body func(ctx context.Context, d digest.Digest, data []byte) (io.Reader, error)
	// done, when set, is called once a download ends: its body closed or
	// its open failed.
	done func(d digest.Digest)
}

func newSource(ls ...layer) *source {
	s := &source{blobs: map[digest.Digest][]byte{}, opens: map[digest.Digest]int{}, openBy: map[digest.Digest]int{}}
	for _, l := range ls {
		s.blobs[l.Blob.Digest] = l.blob
	}
	return s
}

var _ snapshot.BlobSource = (*source)(nil)

func (s *source) Open(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	s.mu.Lock()
	s.opens[desc.Digest]++
	s.order = append(s.order, desc.Digest)
	data, ok := s.blobs[desc.Digest]
	s.mu.Unlock()
	var r io.Reader = bytes.NewReader(data)
	var err error
	if !ok {
		err = errors.New("blob unknown to the test source")
	} else if s.body != nil {
		r, err = s.body(ctx, desc.Digest, data)
	}
	if err != nil {
		if s.done != nil {
			s.done(desc.Digest)
		}
		return nil, err
	}
	s.mu.Lock()
	s.open++
	s.openBy[desc.Digest]++
	s.peak = max(s.peak, s.open)
	s.mu.Unlock()
	return &body{Reader: r, close: func() {
		s.mu.Lock()
		s.open--
		s.openBy[desc.Digest]--
		s.mu.Unlock()
		if s.done != nil {
			s.done(desc.Digest)
		}
	}}, nil
}

// opened returns how many times each blob was opened.
func (s *source) opened() map[digest.Digest]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[digest.Digest]int{}
	for d, n := range s.opens {
		out[d] = n
	}
	return out
}

// openOrder returns the blobs in the order they were opened.
func (s *source) openOrder() []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]digest.Digest(nil), s.order...)
}

// isOpen reports whether a body of d is open now.
func (s *source) isOpen(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.openBy[d] > 0
}

func (s *source) openNow() (now, peak int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open, s.peak
}

type body struct {
	io.Reader
	once  sync.Once
	close func()
}

func (b *body) Close() error {
	b.once.Do(b.close)
	return nil
}

// gatedReader blocks its first read until gate is closed (or ctx is done).
type gatedReader struct {
	ctx  context.Context
	gate <-chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	select {
	case <-g.gate:
	case <-g.ctx.Done():
		return 0, context.Cause(g.ctx)
	}
	return g.r.Read(p)
}

// failingReader returns data then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// snapshotNames lists the store's committed and other snapshots.
func snapshotNames(t *testing.T, s *snapshot.Store) (committed, other []string) {
	t.Helper()
	err := s.Snapshotter().Walk(t.Context(), func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted {
			committed = append(committed, info.Name)
		} else {
			other = append(other, info.Name)
		}
		return nil
	})
	if err != nil && !errdefs.IsNotFound(err) { // a new store has no bucket yet
		t.Fatalf("walk snapshots: %v", err)
	}
	return committed, other
}

// ingests lists the content store's unfinished ingests.
func ingests(t *testing.T, s *snapshot.Store) []string {
	t.Helper()
	statuses, err := s.Content().ListStatuses(t.Context())
	if err != nil {
		t.Fatalf("list ingests: %v", err)
	}
	var refs []string
	for _, st := range statuses {
		refs = append(refs, st.Ref)
	}
	return refs
}
