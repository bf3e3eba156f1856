package snapshot_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

type file struct {
	name, body string
	typ        byte
	link       string
}

func layer(t *testing.T, files ...file) (events.Layer, []byte) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Typeflag: f.typ, Linkname: f.link}
		if f.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if f.typ == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if f.typ == tar.TypeReg {
			_, _ = tw.Write([]byte(f.body))
		}
	}
	_ = tw.Close()
	diffID := digest.FromBytes(tb.Bytes())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tb.Bytes())
	_ = zw.Close()
	return events.Layer{Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz.Bytes()), Size: int64(gz.Len())}, DiffID: diffID}, gz.Bytes()
}

func TestSmoke(t *testing.T) {
	for _, kind := range []snapshot.Kind{snapshot.KindNative, snapshot.KindOverlay} {
		t.Run(string(kind), func(t *testing.T) {
			s, err := snapshot.Open(context.Background(), t.TempDir(), kind)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			l1, b1 := layer(t, file{name: "etc/", typ: tar.TypeDir}, file{name: "etc/a", body: "one", typ: tar.TypeReg}, file{name: "etc/b", body: "bee", typ: tar.TypeReg})
			l2, b2 := layer(t, file{name: "etc/", typ: tar.TypeDir}, file{name: "etc/.wh.b", typ: tar.TypeReg}, file{name: "etc/c", body: "sea", typ: tar.TypeReg})
			blobs := map[digest.Digest][]byte{l1.Blob.Digest: b1, l2.Blob.Digest: b2}
			src := snapshot.BlobSourceFunc(func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(blobs[d.Digest])), nil
			})
			res, err := s.Unpack(context.Background(), snapshot.Request{Layers: []events.Layer{l1, l2}, Source: src})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", res)
			out := t.TempDir()
			if err := s.Materialize(context.Background(), []events.Layer{l1, l2}, out, nil); err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string]string{"etc/a": "one", "etc/c": "sea"} {
				got, err := os.ReadFile(filepath.Join(out, name))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q %v", name, got, err)
				}
			}
			if _, err := os.Stat(filepath.Join(out, "etc/b")); !os.IsNotExist(err) {
				t.Errorf("etc/b survived its whiteout: %v", err)
			}
			res2, err := s.Unpack(context.Background(), snapshot.Request{Layers: []events.Layer{l1, l2}, Source: src})
			if err != nil || res2.Reused != 2 || len(res2.Fetched) != 0 {
				t.Errorf("second unpack %+v %v", res2, err)
			}
		})
	}
}
