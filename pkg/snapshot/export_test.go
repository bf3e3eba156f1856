//go:build linux

package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// gnuTar extracts layers, bottom first, into a new directory with GNU
// tar, applying each layer's whiteouts before it is extracted: the tree
// `curl | tar -x` gives, whiteouts honoured.
func gnuTar(t *testing.T, tarBin string, layers ...layer) string {
	t.Helper()
	root := t.TempDir()
	for _, l := range layers {
		tr := tar.NewReader(bytes.NewReader(l.tar))
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			name := path.Clean("/" + hdr.Name)[1:]
			parent, base := path.Split(name)
			switch {
			case base == ".wh..wh..opq":
				children, _ := os.ReadDir(filepath.Join(root, parent))
				for _, c := range children {
					must(t, os.RemoveAll(filepath.Join(root, parent, c.Name())))
				}
			case strings.HasPrefix(base, ".wh."):
				must(t, os.RemoveAll(filepath.Join(root, parent, strings.TrimPrefix(base, ".wh."))))
			}
		}
		cmd := exec.CommandContext(t.Context(), tarBin, "-x", "-p", "--numeric-owner", "--recursive-unlink", "--exclude=.wh.*", "-C", root)
		cmd.Stdin = bytes.NewReader(l.tar)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar -x: %v\n%s", err, out)
		}
	}
	return root
}

// TestExportMatchesGNUTar: the root filesystem Export writes from a
// snapshot, and the tar WriteTar streams of it, are the tree GNU tar
// extracts from the same layers (whiteouts, opaque directories, hard
// links, symlinks, devices, owners, modes and mtimes), for every prefix
// of the chain and both snapshotters, and so is that tar applied by
// ApplyTar; and no blob is read to make them.
func TestExportMatchesGNUTar(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			tarBin := testenv.Tool(t, "tar", "the reference extraction is GNU tar's")
			layers := referenceChain(t)
			s := openStore(t, kind)
			if _, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(layers...), Source: newSource(layers...)}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			// No blob is read: with them gone, Export still works.
			for _, l := range layers {
				must(t, s.Content().Delete(t.Context(), l.Blob.Digest))
			}
			for i, chainID := range snapshot.ChainIDs(eventsOf(layers...)) {
				want := readTree(t, gnuTar(t, tarBin, layers[:i+1]...))
				if diff := cmp.Diff(readTree(t, reference(t, layers[:i+1]...)), want); diff != "" {
					t.Fatalf("GNU tar and the reference disagree on %d layers (-reference +tar):\n%s", i+1, diff)
				}
				out := filepath.Join(t.TempDir(), "rootfs")
				if err := s.Export(t.Context(), chainID.String(), out); err != nil {
					t.Fatalf("Export: %v", err)
				}
				if diff := cmp.Diff(want, readTree(t, out)); diff != "" {
					t.Errorf("Export of %d layers differs from GNU tar's (-tar +export):\n%s", i+1, diff)
				}
				// Again into the directory it filled, beside a file of its
				// own: every name is replaced, the other file stays.
				must(t, os.WriteFile(filepath.Join(out, "not-the-snapshots"), []byte("kept"), 0o600))
				if err := s.Export(t.Context(), chainID.String(), out); err != nil {
					t.Fatalf("Export over an export: %v", err)
				}
				again := readTree(t, out)
				if _, ok := again["not-the-snapshots"]; !ok {
					t.Errorf("Export over an export removed a file the snapshot does not name")
				}
				delete(again, "not-the-snapshots")
				if diff := cmp.Diff(want, again); diff != "" {
					t.Errorf("Export of %d layers over an export differs from GNU tar's (-tar +export):\n%s", i+1, diff)
				}

				var stream bytes.Buffer
				if err := s.WriteTar(t.Context(), chainID.String(), &stream); err != nil {
					t.Fatalf("WriteTar: %v", err)
				}
				// ApplyTar, as `pull --nats --output` applies the stream.
				applied := t.TempDir()
				if err := snapshot.ApplyTar(t.Context(), applied, bytes.NewReader(stream.Bytes())); err != nil {
					t.Fatalf("ApplyTar of WriteTar's stream: %v", err)
				}
				if diff := cmp.Diff(want, readTree(t, applied)); diff != "" {
					t.Errorf("WriteTar of %d layers, applied by ApplyTar, differs (-tar +applied):\n%s", i+1, diff)
				}
				fromTar := t.TempDir()
				cmd := exec.CommandContext(t.Context(), tarBin, "-x", "-p", "--numeric-owner", "-C", fromTar)
				cmd.Stdin = &stream
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("tar -x of WriteTar's stream: %v\n%s", err, b)
				}
				if diff := cmp.Diff(want, readTree(t, fromTar)); diff != "" {
					t.Errorf("WriteTar of %d layers, extracted by GNU tar, differs (-tar +stream):\n%s", i+1, diff)
				}
			}
			noViewLeft(t, s, len(layers))
		})
	}
}

// TestExportBuilt: a snapshot Build made (a file, a checkout) exports as
// its files; a missing snapshot is an error and writes nothing.
func TestExportBuilt(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			fill := func(_ context.Context, dir string) error {
				if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o750); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, "sub", "a"), []byte("a\n"), 0o640); err != nil {
					return err
				}
				if err := os.Link(filepath.Join(dir, "sub", "a"), filepath.Join(dir, "b")); err != nil {
					return err
				}
				return os.Symlink("sub/a", filepath.Join(dir, "c"))
			}
			src := t.TempDir()
			must(t, fill(t.Context(), src))
			if _, err := s.Build(t.Context(), "content-x", fill); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := s.Export(t.Context(), "content-x", out); err != nil {
				t.Fatalf("Export: %v", err)
			}
			want := readTree(t, src)
			got := readTree(t, out)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Export differs from the files built (-want +got):\n%s", diff)
			}
			missing := filepath.Join(t.TempDir(), "missing")
			if err := s.Export(t.Context(), "content-none", missing); err == nil {
				t.Error("Export of a missing snapshot: no error")
			}
			if _, err := os.Lstat(missing); err == nil {
				t.Error("Export of a missing snapshot made its directory")
			}
		})
	}
}

// TestExportChainMatchesGNUTar: ExportChain, started before the Unpack
// that makes the chain, writes the tree GNU tar extracts from the layers,
// as Export does, each layer on top of the ones below (whiteouts, opaque
// directories, names that change type); so does it for every prefix of a
// chain already there; and it leaves no view behind.
func TestExportChainMatchesGNUTar(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			tarBin := testenv.Tool(t, "tar", "the reference extraction is GNU tar's")
			layers := referenceChain(t)
			s := openStore(t, kind)
			early := filepath.Join(t.TempDir(), "rootfs")
			exported := make(chan error, 1)
			go func() { exported <- s.ExportChain(t.Context(), eventsOf(layers...), early) }()
			if _, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(layers...), Source: newSource(layers...)}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if err := <-exported; err != nil {
				t.Fatalf("ExportChain started before the Unpack: %v", err)
			}
			if diff := cmp.Diff(readTree(t, gnuTar(t, tarBin, layers...)), readTree(t, early)); diff != "" {
				t.Errorf("ExportChain started before the Unpack differs from GNU tar's (-tar +export):\n%s", diff)
			}
			for i := range layers {
				want := readTree(t, gnuTar(t, tarBin, layers[:i+1]...))
				out := filepath.Join(t.TempDir(), "rootfs")
				if err := s.ExportChain(t.Context(), eventsOf(layers[:i+1]...), out); err != nil {
					t.Fatalf("ExportChain of %d layers: %v", i+1, err)
				}
				if diff := cmp.Diff(want, readTree(t, out)); diff != "" {
					t.Errorf("ExportChain of %d layers differs from GNU tar's (-tar +export):\n%s", i+1, diff)
				}
			}
			noViewLeft(t, s, len(layers))
		})
	}
}

// TestExportChainWaits: ExportChain of a chain no Unpack makes waits, and
// returns its context's cause when that ends.
func TestExportChainWaits(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindOverlay)
	layers := referenceChain(t)
	s := openStore(t, snapshot.KindOverlay)
	ctx, cancel := context.WithCancelCause(t.Context())
	stop := errors.New("the pull ended elsewhere")
	exported := make(chan error, 1)
	go func() { exported <- s.ExportChain(ctx, eventsOf(layers...), filepath.Join(t.TempDir(), "rootfs")) }()
	cancel(stop)
	if err := <-exported; !errors.Is(err, stop) {
		t.Errorf("ExportChain of a chain not made: %v, want %v", err, stop)
	}
}

// TestExportXattrs: Export and ExportChain give a file its extended
// attributes, and a directory only those of the top layer that has it
// (a layer's directory over one below replaces its attributes).
func TestExportXattrs(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindOverlay)
	layers := []layer{
		buildLayer(t, gzipped,
			dir("d", 0o755).xattr("user.lower", "l"),
			file("d/f", "f", 0o644).xattr("user.file", "v"),
		),
		buildLayer(t, gzipped,
			dir("d", 0o750).xattr("user.upper", "u"),
			file("d/g", "g", 0o644),
		),
	}
	s := openStore(t, snapshot.KindOverlay)
	if _, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(layers...), Source: newSource(layers...)}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	xattrs := func(p string) map[string]string {
		t.Helper()
		out := map[string]string{}
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			t.Fatalf("listxattr %s: %v", p, err)
		}
		for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
			if name == "" {
				continue
			}
			v := make([]byte, 256)
			m, err := unix.Lgetxattr(p, name, v)
			if err != nil {
				t.Fatalf("getxattr %s %s: %v", p, name, err)
			}
			out[name] = string(v[:m])
		}
		return out
	}
	top := snapshot.ChainIDs(eventsOf(layers...))[1].String()
	viaExport := filepath.Join(t.TempDir(), "rootfs")
	if err := s.Export(t.Context(), top, viaExport); err != nil {
		t.Fatalf("Export: %v", err)
	}
	viaChain := filepath.Join(t.TempDir(), "rootfs")
	if err := s.ExportChain(t.Context(), eventsOf(layers...), viaChain); err != nil {
		t.Fatalf("ExportChain: %v", err)
	}
	for _, root := range []string{viaExport, viaChain} {
		if diff := cmp.Diff(map[string]string{"user.file": "v"}, xattrs(filepath.Join(root, "d", "f"))); diff != "" {
			t.Errorf("%s: d/f xattrs (-want +got):\n%s", root, diff)
		}
		if diff := cmp.Diff(map[string]string{"user.upper": "u"}, xattrs(filepath.Join(root, "d"))); diff != "" {
			t.Errorf("%s: d xattrs (-want +got):\n%s", root, diff)
		}
	}
}

// noViewLeft fails t unless s holds exactly n committed snapshots and
// nothing else: every export removed the view it read through.
func noViewLeft(t *testing.T, s *snapshot.Store, n int) {
	t.Helper()
	committed, other := snapshotNames(t, s)
	if len(committed) != n || len(other) != 0 {
		t.Errorf("after exports: committed %v, others %v; want %d committed and no view left", committed, other, n)
	}
}
