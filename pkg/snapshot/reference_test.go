//go:build linux

package snapshot_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// reference extracts layers, bottom first, into a new directory following
// the OCI image-spec's layer rules, independently of the code under test:
//
//   - ".wh.<name>" deletes <name> from the layers below;
//     ".wh..wh..opq" deletes everything the layers below put in its
//     directory. Whiteouts never hide what their own layer adds, so a
//     layer's whiteouts are applied before its other entries.
//   - Any other entry replaces what is at its path, except that a directory
//     over a directory keeps the contents and takes the new metadata.
//   - Hard links point at a path of the root; symlinks are stored as is.
func reference(t *testing.T, layers ...layer) string {
	t.Helper()
	root := t.TempDir()
	for _, l := range layers {
		referenceApply(t, root, l.tar)
	}
	return root
}

func referenceApply(t *testing.T, root string, tarball []byte) {
	t.Helper()
	type item struct {
		hdr  *tar.Header
		body []byte
	}
	var items []item
	tr := tar.NewReader(bytes.NewReader(tarball))
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
			children, err := os.ReadDir(filepath.Join(root, parent))
			if !errors.Is(err, fs.ErrNotExist) {
				must(t, err)
			}
			for _, c := range children {
				must(t, os.RemoveAll(filepath.Join(root, parent, c.Name())))
			}
		case strings.HasPrefix(base, ".wh."):
			must(t, os.RemoveAll(filepath.Join(root, parent, strings.TrimPrefix(base, ".wh."))))
		default:
			data, err := io.ReadAll(tr)
			must(t, err)
			hdr.Name = name
			items = append(items, item{hdr, data})
		}
	}
	for _, it := range items {
		h := it.hdr
		p := filepath.Join(root, h.Name)
		if fi, err := os.Lstat(p); err == nil && (!fi.IsDir() || h.Typeflag != tar.TypeDir) {
			must(t, os.RemoveAll(p))
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		perm := uint32(h.FileInfo().Mode().Perm())
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				t.Fatal(err)
			}
		case tar.TypeReg:
			must(t, os.WriteFile(p, it.body, 0o600))
		case tar.TypeSymlink:
			must(t, os.Symlink(h.Linkname, p))
		case tar.TypeLink:
			must(t, os.Link(filepath.Join(root, path.Clean("/"+h.Linkname)), p))
		case tar.TypeChar:
			must(t, syscall.Mknod(p, syscall.S_IFCHR|perm, mkdev(h.Devmajor, h.Devminor)))
		case tar.TypeBlock:
			must(t, syscall.Mknod(p, syscall.S_IFBLK|perm, mkdev(h.Devmajor, h.Devminor)))
		case tar.TypeFifo:
			must(t, syscall.Mkfifo(p, perm))
		default:
			t.Fatalf("reference: unexpected entry type %q for %s", h.Typeflag, h.Name)
		}
		must(t, os.Lchown(p, h.Uid, h.Gid))
		if h.Typeflag != tar.TypeSymlink {
			must(t, os.Chmod(p, h.FileInfo().Mode())) // after chown, which clears setuid
		}
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeLink {
			must(t, os.Chtimes(p, time.Time{}, h.ModTime))
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mkdev encodes a device number the way Linux's makedev does.
func mkdev(major, minor int64) int {
	return int((minor & 0xff) | ((major & 0xfff) << 8) | ((minor &^ 0xff) << 12) | ((major &^ 0xfff) << 32))
}

func devString(rdev uint64) string {
	major := (rdev >> 8 & 0xfff) | (rdev >> 32 &^ 0xfff)
	minor := (rdev & 0xff) | (rdev >> 12 &^ 0xff)
	return fmt.Sprintf("%d:%d", major, minor)
}

// node is what the tests compare of one file system entry.
type node struct {
	Type string
	// Mode holds the permission, setuid, setgid and sticky bits.
	Mode     fs.FileMode
	UID, GID uint32
	// Size, SHA256 and MTime are for regular files only.
	Size   int64
	SHA256 string
	MTime  int64
	Target string // symlinks
	Dev    string // device nodes, "major:minor"
	// LinkGroup is, for a regular file with other names in the tree, the
	// first of its names (sorted); empty for a file with one name.
	LinkGroup string
}

// readTree describes every entry under root (not root itself) by its path
// relative to root. It follows no symlinks.
func readTree(t *testing.T, root string) map[string]node {
	t.Helper()
	tree := map[string]node{}
	byInode := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := node{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), UID: st.Uid, GID: st.Gid}
		switch m := fi.Mode(); {
		case m.IsDir():
			n.Type = "dir"
		case m.IsRegular():
			n.Type, n.Size, n.MTime = "file", fi.Size(), fi.ModTime().Unix()
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			n.SHA256 = hex.EncodeToString(sum[:])
			byInode[st.Ino] = append(byInode[st.Ino], rel)
		case m&fs.ModeSymlink != 0:
			n.Type, n.Mode = "symlink", 0
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case m&fs.ModeCharDevice != 0:
			n.Type, n.Dev = "char", devString(st.Rdev)
		case m&fs.ModeDevice != 0:
			n.Type, n.Dev = "block", devString(st.Rdev)
		case m&fs.ModeNamedPipe != 0:
			n.Type = "fifo"
		default:
			n.Type = "other " + m.String()
		}
		tree[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("read tree %s: %v", root, err)
	}
	for _, names := range byInode {
		if len(names) < 2 {
			continue
		}
		slices.Sort(names)
		for _, name := range names {
			n := tree[name]
			n.LinkGroup = names[0]
			tree[name] = n
		}
	}
	return tree
}

// viewTree returns the merged contents of the committed snapshot key as the
// snapshotter presents them: a native view's directory, or an overlay
// view mounted on a temp dir (unmounted at cleanup).
func viewTree(t *testing.T, s *snapshot.Store, key string) map[string]node {
	t.Helper()
	ctx := t.Context()
	sn := s.Snapshotter()
	viewKey := fmt.Sprintf("test-view-%d-%s", time.Now().UnixNano(), key)
	mounts, err := sn.View(ctx, viewKey, key)
	if err != nil {
		t.Fatalf("view %s: %v", key, err)
	}
	defer func() {
		if err := sn.Remove(ctx, viewKey); err != nil {
			t.Errorf("remove view: %v", err)
		}
	}()
	if s.Kind() == snapshot.KindNative {
		if len(mounts) != 1 || mounts[0].Type != "bind" {
			t.Fatalf("native view mounts = %+v, want one bind mount", mounts)
		}
		return readTree(t, mounts[0].Source)
	}
	target := t.TempDir()
	if err := mount.All(mounts, target); err != nil {
		t.Fatalf("mount view %+v: %v", mounts, err)
	}
	defer func() {
		if err := mount.UnmountAll(target, 0); err != nil {
			t.Errorf("unmount view: %v", err)
		}
	}()
	return readTree(t, target)
}
