package output_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/failure"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/output"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// An output store is written through the session: a blob of several
// chunks arrives whole and verified, the tag goes into index.json, and the
// index reads back; content that is not its digest's is refused and
// leaves no file.
func TestOutputStore(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dir := filepath.Join(t.TempDir(), "out")
	l, err := ocilayout.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	serving, _ := env.Connect(t, "client")
	reading, _ := env.Connect(t, "service")
	id := session.NewID()
	outputs, err := output.NewServer(map[string]*ocilayout.Layout{"out": l})
	if err != nil {
		t.Fatal(err)
	}
	stores, err := store.NewServer(map[string]*ocilayout.Layout{"out": l})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := session.Serve(t.Context(), serving, id, session.Config{Protocols: []session.Protocol{stores, outputs}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	c, err := session.NewClient(reading)
	if err != nil {
		t.Fatal(err)
	}
	w := output.NewClient(c)

	data := make([]byte, 2*output.MaxWriteChunk+123)
	_, _ = rand.Read(data)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := w.Write(t.Context(), id, "out", desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	got, err := l.ReadBlob(t.Context(), desc, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the blob written through the session: %d bytes, %v", len(got), err)
	}
	if err := w.Tag(t.Context(), id, "out", desc, "latest"); err != nil {
		t.Fatal(err)
	}
	idx, err := store.NewClient(c).Index(t.Context(), id, "out")
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := ocilayout.Find(idx, "latest"); !ok || d.Digest != desc.Digest {
		t.Errorf("index read through the session: %+v, want latest = %s", idx.Manifests, desc.Digest)
	}

	bad := ocispec.Descriptor{Digest: digest.FromString("other"), Size: int64(len(data))}
	if err := w.Write(t.Context(), id, "out", bad, bytes.NewReader(data)); !errors.Is(err, failure.ErrInvalid) {
		t.Errorf("content of another digest: %v, want ErrInvalid", err)
	}
	if has, _ := l.Has(t.Context(), bad); has {
		t.Error("content of another digest was committed")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != ocilayout.BlobsDir && e.Name() != ocilayout.LayoutFile && e.Name() != "index.json" && e.Name() != ocilayout.LockFile {
			t.Errorf("left in the layout: %s", e.Name())
		}
	}
	if err := w.Tag(t.Context(), id, "out", bad, "x"); !errors.Is(err, failure.ErrInvalid) {
		t.Errorf("tag of a blob not written: %v, want ErrInvalid", err)
	}
	if _, err := store.NewClient(c).Index(t.Context(), id, "none"); !errors.Is(err, failure.ErrNotFound) {
		t.Errorf("index of a store the session does not serve: %v, want ErrNotFound", err)
	}
}
