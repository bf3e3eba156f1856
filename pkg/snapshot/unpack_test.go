//go:build linux

package snapshot_test

import (
	"archive/tar"
	"crypto/sha256"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// referenceChain is four layers, gzip, zstd, plain and gzip again, that
// exercise the layer rules: owners and special mode bits, hard links and
// relative and absolute symlinks, device nodes and a fifo, whiteouts, an
// opaque directory, a directory deleted and then recreated with other
// contents, a file replaced by a directory and a directory by a file, and
// a hard-linked file replaced under one of its names.
func referenceChain(t *testing.T) []layer {
	t.Helper()
	tool := file("usr/bin/tool", "#!/bin/sh\necho v1\n", 0o755)
	h1 := file("etc/h1", "linked twice", 0o640).owner(0, 42)
	return []layer{
		buildLayer(t, gzipped,
			dir("etc", 0o755),
			file("etc/a", "one", 0o644),
			file("etc/b", "bee", 0o600).owner(1000, 1000),
			file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
			symlink("etc/abs", "/etc/a"),
			dir("usr", 0o755), dir("usr/bin", 0o755),
			tool,
			hardlink("usr/bin/tool-link", tool),
			file("usr/bin/suid", "setuid", 0o4755),
			file("usr/bin/sgid", "setgid", 0o2755).owner(0, 50),
			symlink("bin", "usr/bin"),
			dir("old", 0o755), file("old/x", "x", 0o644), dir("old/sub", 0o750), file("old/sub/y", "y", 0o644),
			dir("opq", 0o755), file("opq/lower1", "l1", 0o644), dir("opq/lowerdir", 0o755), file("opq/lowerdir/deep", "d", 0o644),
			file("f", "a file that becomes a directory", 0o644),
			dir("g", 0o755), file("g/inner", "in a directory that becomes a file", 0o644),
			dir("tmp", 0o1777),
			dir("dev", 0o755), chardev("dev/null", 1, 3), blockdev("dev/loop9", 7, 9),
			dir("run", 0o755), fifo("run/fifo"),
			dir("home", 0o755), dir("home/nobody", 0o700).owner(65534, 65534),
			file("home/nobody/.profile", "PS1='$ '\n", 0o600).owner(65534, 65534),
		),
		buildLayer(t, zstdded,
			whiteout("etc/b"),
			file("etc/c", "sea", 0o644), // no etc/ entry: the directory comes from below
			h1, hardlink("etc/h2", h1),
			whiteout("old"),
			dir("opq", 0o711), opaque("opq"), file("opq/upper", "u", 0o644), file("opq/upper2", "u2", 0o644),
			dir("f", 0o755), file("f/y", "y", 0o644),
			file("g", "now a file", 0o600),
			file("usr/bin/tool", "#!/bin/sh\necho v2\n", 0o755), // tool-link keeps v1
		),
		buildLayer(t, unpacked,
			dir("old", 0o700), file("old/new", "recreated", 0o644),
			symlink("etc/rel", "../usr/bin/tool"),
			file("f/z", "z", 0o644),
			whiteout("etc/abs"),
			whiteout("usr/bin/tool-link"),
			chardev("dev/zero", 1, 5),
		),
		buildLayer(t, gzipped,
			whiteout("opq/upper"),
			file("opq/new", "n", 0o644),
			dir("tmp", 0o1777), file("tmp/.keep", "", 0o644),
			file("etc/h1", "h1 rewritten", 0o640), // h2 keeps the old contents
		),
	}
}

// TestReference pins the reference extractor itself, so that it and the
// code under test cannot agree on a wrong answer.
func TestReference(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	layers := referenceChain(t)
	got := slices.Sorted(maps.Keys(readTree(t, reference(t, layers...))))
	want := []string{
		"bin", "dev", "dev/loop9", "dev/null", "dev/zero",
		"etc", "etc/a", "etc/c", "etc/h1", "etc/h2", "etc/passwd", "etc/rel",
		"f", "f/y", "f/z", "g", "home", "home/nobody", "home/nobody/.profile",
		"old", "old/new", "opq", "opq/new", "opq/upper2", "run", "run/fifo", "tmp", "tmp/.keep",
		"usr", "usr/bin", "usr/bin/sgid", "usr/bin/suid", "usr/bin/tool",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reference tree paths (-want +got):\n%s", diff)
	}
	two := readTree(t, reference(t, layers[:2]...))
	checks := map[string]node{
		"etc/h2":            {Type: "file", Mode: 0o640, GID: 42, Size: 12, LinkGroup: "etc/h1"},
		"usr/bin/tool-link": {Type: "file", Mode: 0o755, Size: int64(len("#!/bin/sh\necho v1\n"))},
		"usr/bin/suid":      {Type: "file", Mode: 0o755 | fs.ModeSetuid, Size: 6},
		"tmp":               {Type: "dir", Mode: 0o777 | fs.ModeSticky},
		"dev/loop9":         {Type: "block", Mode: 0o660, Dev: "7:9"},
		"f":                 {Type: "dir", Mode: 0o755},
		"g":                 {Type: "file", Mode: 0o600, Size: 10},
		"opq":               {Type: "dir", Mode: 0o711},
	}
	for name, want := range checks {
		got := two[name]
		got.SHA256, got.MTime = "", 0
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("reference after two layers: %s (-want +got):\n%s", name, diff)
		}
	}
}

func TestUnpackMatchesReference(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			layers := referenceChain(t)
			s := openStore(t, kind)
			src := newSource(layers...)
			res, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(layers...), Source: src})
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}

			var diffIDs, blobs []digest.Digest
			var size int64
			for _, l := range layers {
				diffIDs = append(diffIDs, l.DiffID)
				blobs = append(blobs, l.Blob.Digest)
				size += int64(len(l.tar))
			}
			top := identity.ChainID(diffIDs)
			want := snapshot.Result{ChainID: top, Key: top.String(), Size: size, Fetched: blobs, Extracted: len(layers), Unpacked: size}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("Unpack result (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(identity.ChainIDs(slices.Clone(diffIDs)), snapshot.ChainIDs(eventsOf(layers...))); diff != "" {
				t.Errorf("ChainIDs (-want +got):\n%s", diff)
			}

			// The snapshot of every prefix, as the snapshotter presents it.
			for i, chainID := range snapshot.ChainIDs(eventsOf(layers...)) {
				want := readTree(t, reference(t, layers[:i+1]...))
				if diff := cmp.Diff(want, viewTree(t, s, chainID.String())); diff != "" {
					t.Errorf("snapshot of %d layers differs from the reference (-want +got):\n%s", i+1, diff)
				}
			}

			// Materialize from the content store (no source).
			out := filepath.Join(t.TempDir(), "rootfs")
			if err := s.Materialize(t.Context(), eventsOf(layers...), out, nil); err != nil {
				t.Fatalf("Materialize: %v", err)
			}
			if diff := cmp.Diff(readTree(t, reference(t, layers...)), readTree(t, out)); diff != "" {
				t.Errorf("Materialize differs from the reference (-want +got):\n%s", diff)
			}
			if got := src.opened(); len(got) != len(layers) {
				t.Errorf("source opens = %v, want each of %d blobs once", got, len(layers))
			}
		})
	}
}

// TestMaterializeFromSource: a node without the blobs materializes from
// the source, verifying each.
func TestMaterializeFromSource(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	layers := referenceChain(t)
	s := openStore(t, snapshot.KindNative)
	src := newSource(layers...)
	out := t.TempDir()
	if err := s.Materialize(t.Context(), eventsOf(layers...), out, snapshot.BlobSourceFunc(src.Open)); err != nil {
		t.Fatalf("Materialize: %v", err)
	}
	if diff := cmp.Diff(readTree(t, reference(t, layers...)), readTree(t, out)); diff != "" {
		t.Errorf("Materialize differs from the reference (-want +got):\n%s", diff)
	}
	if got, _ := snapshotNames(t, s); len(got) != 0 {
		t.Errorf("Materialize made snapshots %v", got)
	}
}

// TestUnpackStaysInside feeds hostile layers to Unpack and Materialize:
// whatever they return, nothing may appear outside the snapshot or the
// target directory, and the host's /etc stays as it was.
func TestUnpackStaysInside(t *testing.T) {
	t.Parallel()
	passwd := fileState(t, "/etc/passwd")
	raw := func(name string, typ byte, link string) entry {
		return entry{name: name, typ: typ, link: link, mode: 0o644, mtime: mtime}
	}
	cases := []struct {
		name    string
		entries []entry
		// succeeds is set for layers that are legitimate and must unpack.
		succeeds bool
		// inside lists entries that must then be in the root filesystem.
		inside map[string]node
	}{
		{name: "dot-dot paths", entries: []entry{
			file("../../pwn-dotdot", "x", 0o644),
			file("a/../../../pwn-dotdot2", "x", 0o644),
			dir("../../../pwn-dotdot-dir", 0o755),
			file("/../../pwn-abs-dotdot", "x", 0o644),
		}},
		{name: "absolute symlink then a file through it", entries: []entry{
			symlink("etc", "/etc"),
			file("etc/pwn-passwd", "evil", 0o644),
		}},
		{name: "absolute symlink to /tmp then a file through it", entries: []entry{
			symlink("pwn-tmp", "/tmp"),
			file("pwn-tmp/pwn-tmpfile", "evil", 0o644),
		}},
		{name: "symlink up then writes through it", entries: []entry{
			symlink("pwn-up", "../../.."),
			file("pwn-up/pwn-through", "evil", 0o644),
			dir("pwn-up/pwn-through-dir", 0o755),
			file("pwn-up/pwn-through-dir/f", "evil", 0o644),
			symlink("pwn-up/pwn-through-link", "/"),
		}},
		{name: "hard link out of the root", entries: []entry{
			raw("pwn-hardlink", tar.TypeLink, "../../../../../../etc/passwd"),
		}},
		{name: "hard link through an absolute symlink", entries: []entry{
			symlink("pwn-etc", "/etc"),
			raw("pwn-hardlink2", tar.TypeLink, "pwn-etc/passwd"),
		}},
		{name: "device node", succeeds: true, entries: []entry{
			dir("dev", 0o755),
			chardev("dev/pwn-null", 1, 3),
			blockdev("pwn-blk", 7, 0),
		}, inside: map[string]node{
			"dev/pwn-null": {Type: "char", Mode: 0o666, Dev: "1:3"},
			"pwn-blk":      {Type: "block", Mode: 0o660, Dev: "7:0"},
		}},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			t.Run(string(kind)+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				needKind(t, kind)
				parent := t.TempDir()
				root := filepath.Join(parent, "a", "b", "store")
				out := filepath.Join(parent, "a", "b", "out")
				s := openStoreAt(t, root, kind)
				l := buildLayer(t, gzipped, tc.entries...)
				src := newSource(l)
				res, uerr := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(l), Source: src})
				merr := s.Materialize(t.Context(), eventsOf(l), out, src)
				t.Logf("Unpack: %v; Materialize: %v", uerr, merr)
				if tc.succeeds && (uerr != nil || merr != nil) {
					t.Fatalf("a legitimate layer failed: Unpack %v, Materialize %v", uerr, merr)
				}

				allowed := regexp.MustCompile(`^a/b/(store/snapshots/(native/snapshots/[0-9]+|overlayfs/snapshots/[0-9]+/fs)|out)/.`)
				err := filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					rel, _ := filepath.Rel(parent, p)
					if strings.HasPrefix(d.Name(), "pwn") && !allowed.MatchString(rel) {
						t.Errorf("%s escaped to %s", d.Name(), rel)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range []string{"/etc/pwn-passwd", "/tmp/pwn-tmpfile", "/pwn-through", "/pwn-through-dir", "/pwn-dotdot", "/pwn-abs-dotdot"} {
					if _, err := os.Lstat(p); err == nil {
						t.Errorf("%s was created on the host", p)
					}
				}
				if got := fileState(t, "/etc/passwd"); got != passwd {
					t.Errorf("/etc/passwd changed: %+v, was %+v", got, passwd)
				}

				if uerr == nil {
					got := viewTree(t, s, res.Key)
					for name, want := range tc.inside {
						n := got[name]
						n.UID, n.GID = 0, 0
						if diff := cmp.Diff(want, n); diff != "" {
							t.Errorf("snapshot entry %s (-want +got):\n%s", name, diff)
						}
					}
				}
				if merr == nil {
					got := readTree(t, out)
					for name, want := range tc.inside {
						if diff := cmp.Diff(want, got[name]); diff != "" {
							t.Errorf("materialized entry %s (-want +got):\n%s", name, diff)
						}
					}
				}
			})
		}
	}
}

type hostFile struct {
	sum   [32]byte
	nlink uint64
	ino   uint64
}

func fileState(t *testing.T, p string) hostFile {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return hostFile{sum: sha256.Sum256(data), nlink: uint64(st.Nlink), ino: st.Ino}
}
