//go:build linux

package snapshot

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"golang.org/x/sys/unix"

	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// TestApplyFreshMatchesArchiveApply applies archives, ordinary and
// hostile, with applyFresh and with containerd's archive.Apply (the
// reference it replaces for empty directories) into two empty
// directories, with both whiteout conversions, and requires the same
// outcome: both fail or neither, and the same tree, every entry's type,
// mode, owner, size, content, device, link target, hard-link group,
// xattrs (trusted ones included: overlay's opaque marker) and times to the
// nanosecond, directories' included.
func TestApplyFreshMatchesArchiveApply(t *testing.T) {
	testenv.Root(t, "entries are extracted with their owners and devices")
	ts := time.Unix(1700000000, 123456789)
	later := ts.Add(time.Hour)
	f := func(name, body string, mode int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body)), ModTime: ts, Uid: 1000, Gid: 1001, Format: tar.FormatPAX, Linkname: body}
	}
	d := func(name string, mode int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, ModTime: ts, Uid: 7, Gid: 8}
	}
	sym := func(name, target string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: ts, Uid: 3, Gid: 4}
	}
	hard := func(name, target string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644, ModTime: ts, Uid: 5, Gid: 6}
	}
	dev := func(name string, typ byte, major, minor int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: 0o640, Devmajor: major, Devminor: minor, ModTime: ts}
	}
	withXattrs := func(h *tar.Header, kv ...string) *tar.Header {
		h.PAXRecords = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			h.PAXRecords[paxSchilyXattr+kv[i]] = kv[i+1]
		}
		return h
	}
	// outside is a directory beside the roots, with a file a hard link
	// must not reach.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("not the layer's"), 0o600); err != nil {
		t.Fatal(err)
	}
	atime := f("etc/atime", "x", 0o600)
	atime.AccessTime = later
	atime.Format = tar.FormatPAX

	cases := map[string][]*tar.Header{
		"ordinary": {
			d("etc/", 0o755), f("etc/passwd", "root:x:0:0\n", 0o644), f("etc/shadow", "secret", 0o640),
			f("usr/bin/su", "elf", 0o4755), f("usr/bin/wall", "elf", 0o2755), d("tmp/", 0o1777),
			f("a/b/c/d/deep", "implied parents", 0o600),
			sym("usr/bin/sh", "bash"), sym("abs", "/etc/passwd"), hard("usr/bin/su2", "usr/bin/su"),
			dev("dev/null", tar.TypeChar, 1, 3), dev("dev/sda", tar.TypeBlock, 8, 0), dev("run/fifo", tar.TypeFifo, 0, 0),
			withXattrs(f("caps", "elf", 0o755), "user.note", "hi", "trusted.evil", "y", "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
			withXattrs(d("xdir/", 0o700), "user.dir", "1"),
			withXattrs(sym("xlink", "caps"), "user.onlink", "refused on a symlink"),
			atime, f("usr/bin/empty", "", 0o644),
			d("usr/", 0o751), d("a/b/", 0o700), // after their contents: times set at the end
		},
		"replacements": {
			f("x", "first", 0o644), f("x", "second", 0o600),
			f("y", "file", 0o644), d("y/", 0o700), f("y/in", "in", 0o644),
			d("z/", 0o755), f("z/in", "gone", 0o644), f("z", "file over dir", 0o644),
			d("w/", 0o755), d("w/", 0o711),
			sym("s", "x"), f("s", "over a symlink", 0o644),
		},
		"through symlinks": {
			sym("etc", "/var/../../outside"), f("etc/passwd", "bounded to the root", 0o644),
			d("real/", 0o755), sym("dirlink", "real"), f("dirlink/file", "into real", 0o644),
			sym("up", "../../../.."), f("up/escaped", "still inside", 0o644),
			f("after", "once the records are dropped", 0o644), d("later/dir/", 0o700), f("later/dir/f", "f", 0o600),
		},
		"names out of the root": {
			f("../../x", "x", 0o644), f("/abs/y", "y", 0o644), f("./a/../../b", "b", 0o644), d("./", 0o700), d("../", 0o700),
		},
		"hard links": {
			f("data/f", "content", 0o644), hard("data/g", "data/f"), hard("h", "../../../data/f"), hard("/i", "/data/f"),
			sym("sl", "data/f"), hard("sl2", "sl"), sym("dl", "data"), hard("via", "dl/f"), hard("dl2", "dl"), f("dl2/new", "through a linked symlink", 0o644),
		},
		"hard link out of the tree":                   {f("a", "a", 0o644), hard("b", "/etc/hostname")},
		"hard link to nothing":                        {hard("b", "missing")},
		"hard link through a symlink out of the tree": {sym("out", outside), hard("stolen", "out/secret")},
		"whiteouts": {
			f("keep/a", "a", 0o644), f("keep/.wh.b", "", 0o644),
			d("opq/", 0o755), f("opq/old", "old", 0o644), d("opq/sub/", 0o755), f("opq/sub/x", "x", 0o644), f("opq/.wh..wh..opq", "", 0o644), f("opq/new", "new", 0o644), f("opq/sub/again", "again", 0o644),
			f("opq2/implied/x", "x", 0o644), f("opq2/.wh..wh..opq", "", 0o644), f("opq2/implied/y", "y", 0o644),
			f("gone/.wh.never", "", 0o644), withXattrs(f(".wh.top", "", 0o644)),
		},
		"bad whiteout":          {f("a/.wh..", "", 0o644)},
		"bad whiteout up":       {f("a/.wh...", "", 0o644)},
		"file under a file":     {f("f", "f", 0o644), f("f/g", "g", 0o644)},
		"device out of range":   {dev("dev/big", tar.TypeChar, 1<<33, 0)},
		"whiteout over a file":  {f("a", "a", 0o644), f(".wh.a", "", 0o644), f("a", "again", 0o600)},
		"dir over implied dirs": {f("p/q/r", "r", 0o644), d("p/", 0o700), d("p/q/", 0o750)},
	}
	for name, hdrs := range cases {
		for _, overlay := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/overlay=%v", name, overlay), func(t *testing.T) {
				tarball := tarOfHeaders(t, hdrs)
				want, got := t.TempDir(), t.TempDir()
				var opts []archive.ApplyOpt
				if overlay {
					opts = append(opts, archive.WithConvertWhiteout(archive.OverlayConvertWhiteout))
				}
				_, wantErr := archive.Apply(t.Context(), want, bytes.NewReader(tarball), opts...)
				gotErr := applyFresh(t.Context(), got, bytes.NewReader(tarball), overlay, nil)
				t.Logf("applyFresh: %v; archive.Apply: %v", gotErr, wantErr)
				if (wantErr == nil) != (gotErr == nil) {
					t.Fatalf("applyFresh: %v; archive.Apply: %v", gotErr, wantErr)
				}
				wantTree, gotTree := statTree(t, want), statTree(t, got)
				for _, p := range sortedKeys(wantTree, gotTree) {
					if wantTree[p] != gotTree[p] {
						t.Errorf("%s:\n applyFresh    %q\n archive.Apply %q", p, gotTree[p], wantTree[p])
					}
				}
				if len(wantTree) == 0 && wantErr == nil {
					t.Fatal("archive.Apply made nothing: the case tests nothing")
				}
			})
		}
	}
}

// tarOfHeaders writes a tar of hdrs; a regular file's body is its
// Linkname (cleared).
func tarOfHeaders(t *testing.T, hdrs []*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		h := *h
		body := ""
		if h.Typeflag == tar.TypeReg {
			body, h.Linkname = h.Linkname, ""
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("header %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// statTree describes every path under root (root itself as "."): all of
// its stat but the inode numbers and ctime (a hard-link group by its first
// name instead), its xattrs and its content. Everything is stat'ed before
// any file is read, so that reading changes no atime it reports.
func statTree(t *testing.T, root string) map[string]string {
	t.Helper()
	type seen struct {
		st  unix.Stat_t
		rel string
	}
	var all []seen
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		all = append(all, seen{st, rel})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	first := map[uint64]string{}
	for _, s := range all {
		if _, ok := first[s.st.Ino]; !ok && s.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			first[s.st.Ino] = s.rel
		}
	}
	tree := map[string]string{}
	for _, s := range all {
		st := s.st
		p := filepath.Join(root, s.rel)
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d rdev=%d nlink=%d atime=%s mtime=%s", st.Mode, st.Uid, st.Gid, st.Rdev, st.Nlink,
			archiveTime(st.Atim), archiveTime(st.Mtim))
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			desc += " group=" + first[st.Ino]
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			desc += fmt.Sprintf(" size=%d sha256=%x", st.Size, sha256.Sum256(data))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			desc += " target=" + target
		}
		desc += " xattrs=" + xattrsOf(t, p)
		tree[s.rel] = desc
	}
	return tree
}

// archiveTime is a time an archive set, or "now" for one the extraction
// left (a directory the archive does not name, changed as it was filled).
func archiveTime(ts unix.Timespec) string {
	if ts.Sec > time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix() {
		return "now"
	}
	return fmt.Sprint(ts.Nano())
}

func xattrsOf(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil && !errors.Is(err, syscall.ENOTSUP) {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		out = append(out, fmt.Sprintf("%s=%q", name, v[:m]))
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func sortedKeys(ms ...map[string]string) []string {
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	return keys
}
