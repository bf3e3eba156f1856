//go:build linux

package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/continuity/fs"
	"github.com/moby/sys/userns"
	"golang.org/x/sys/unix"
)

// Names in a layer's tar stream that stand for something else (the OCI
// image spec's whiteouts), as containerd's archive package reads them.
const (
	whiteoutPrefix    = ".wh."
	whiteoutOpaqueDir = whiteoutPrefix + whiteoutPrefix + ".opq"
	paxSchilyXattr    = "SCHILY.xattr."
)

// errInvalidArchive marks a tar stream no extraction may apply.
var errInvalidArchive = errors.New("invalid archive")

// What a fresh extraction made at a path (freshTree.made).
type madeKind uint8

const (
	madeDir madeKind = iota + 1
	madeSymlink
	madeOther // a regular file, device, FIFO or whiteout
)

// freshTree applies a layer's tar stream to an empty directory that
// nothing else writes while it runs (a snapshot prepared without a
// parent), with the result of containerd's archive.Apply without parents:
// the same entries, names bounded to the root, hard links inside it, the
// same whiteouts, owners, modes, xattrs and times, the same errors for the
// same bad archives.
//
// What it saves is archive.Apply's per-entry look at the disk: the symlink
// walk of each parent, the Lstat of the parent and of the entry, and the
// Lstat before each chmod. Since the directory started empty, made records
// everything the extraction created, so these questions are answered from
// memory. Files are created exclusively (O_EXCL, mkdir, mknod, symlink and
// link all fail on an existing name), so a record that was wrong would
// fail the layer rather than write through a link. Once an entry's path
// goes through a symlink the layer itself made (or a removal leaves the
// records unsure), the records are dropped and every later entry is
// resolved on the disk the way archive.Apply resolves it.
type freshTree struct {
	root string
	// overlay selects overlayfs whiteouts (character devices and the
	// opaque xattr) rather than removing what a whiteout names.
	overlay bool
	// filter, when set, is called with each entry (name cleaned) and
	// skips it when it returns false.
	filter func(*tar.Header) (bool, error)

	// made, while exact, is every path under root (relative, cleaned)
	// and what is there; nil once the disk is the only truth.
	made map[string]madeKind
	// unpacked and opaque serve the removing whiteouts' opaque markers,
	// as archive.Apply's unpackedPaths and opaqueDirs.
	unpacked map[string]struct{}
	opaque   map[string]struct{}
	dirs     []*tar.Header
}

// freshCopyBuffers hold file contents on their way from the tar stream to
// the disk: larger than io.Copy's 32 KiB, for fewer writes.
var freshCopyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// isEmptyDir reports whether dir is an empty directory.
func isEmptyDir(dir string) bool {
	f, err := os.Open(dir) //nolint:gosec // G304: a snapshot's or an output's own directory
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	names, err := f.Readdirnames(1)
	return len(names) == 0 && errors.Is(err, io.EOF)
}

// applyFresh applies the tar stream r to root (see freshTree).
func applyFresh(ctx context.Context, root string, r io.Reader, overlay bool, filter func(*tar.Header) (bool, error)) error {
	t := &freshTree{
		root:     filepath.Clean(root),
		overlay:  overlay,
		filter:   filter,
		made:     map[string]madeKind{},
		unpacked: map[string]struct{}{},
		opaque:   map[string]struct{}{},
	}
	tr := tar.NewReader(r)
	for {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := t.entry(ctx, hdr, tr); err != nil {
			return err
		}
	}
	for _, hdr := range t.dirs {
		p, err := t.resolve(hdr.Name)
		if err != nil {
			return err
		}
		if err := chtimesOf(p, hdr); err != nil {
			return err
		}
	}
	return nil
}

// rel returns name as a path relative to the root: cleaned, any ".."
// stopping at the root; "" is the root itself.
func rel(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// dirsOnly reports whether every ancestor of p that the records know is a
// directory this extraction made (those it does not know do not exist).
func (t *freshTree) dirsOnly(p string) bool {
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		switch t.made[d] {
		case madeDir:
			return true // its own ancestors were checked when it was made
		case 0:
			continue
		default:
			return false
		}
	}
	return true
}

// resolve returns where name is on the disk, as containerd's fs.RootPath
// finds it: its directories' symlinks followed, bounded to the root.
func (t *freshTree) resolve(name string) (string, error) {
	p := rel(name)
	if t.made != nil && t.dirsOnly(p) {
		return filepath.Join(t.root, p), nil
	}
	dir, base := path.Split(p)
	pp, err := fs.RootPath(t.root, dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(pp, base), nil
}

// leaveExact drops the records: from now on the disk answers.
func (t *freshTree) leaveExact() { t.made = nil }

// removeAll removes what is at p (relative) and its records.
func (t *freshTree) removeAll(p string) error {
	if err := os.RemoveAll(filepath.Join(t.root, p)); err != nil {
		return err
	}
	if t.made != nil {
		prefix := p + "/"
		delete(t.made, p)
		for k := range t.made {
			if strings.HasPrefix(k, prefix) {
				delete(t.made, k)
			}
		}
	}
	return nil
}

func (t *freshTree) entry(ctx context.Context, hdr *tar.Header, tr io.Reader) error {
	hdr.Name = filepath.Clean(hdr.Name)
	if t.filter != nil {
		ok, err := t.filter(hdr)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
	}
	if (hdr.Typeflag == tar.TypeBlock || hdr.Typeflag == tar.TypeChar) && userns.RunningInUserNS() {
		return nil // as archive.Apply: no devices in a user namespace
	}
	p := rel(hdr.Name)
	if p == "" {
		return nil // the root itself
	}
	if t.made != nil && !t.dirsOnly(p) {
		t.leaveExact() // through a symlink (or a file, which fails below)
	}
	var full string
	if t.made != nil {
		full = filepath.Join(t.root, p)
		if err := t.mkparentExact(p); err != nil {
			return err
		}
	} else {
		dir, base := filepath.Split(hdr.Name)
		pp, err := fs.RootPath(t.root, dir)
		if err != nil {
			return fmt.Errorf("failed to get root path: %w", err)
		}
		full = filepath.Join(pp, filepath.Join("/", base))
		if full == t.root {
			return nil
		}
		if pp != t.root {
			parent := pp
			if base == "" {
				parent = filepath.Dir(full)
			}
			if err := mkparentDisk(parent, t.root); err != nil {
				return err
			}
		}
	}
	if err := validateWhiteout(full); err != nil {
		return err
	}
	write, err := t.whiteout(hdr, full)
	if err != nil {
		return fmt.Errorf("failed to convert whiteout file %q: %w", hdr.Name, err)
	}
	if !write {
		return nil
	}
	// An existing path is replaced, unless both are directories (merged).
	if t.made != nil {
		if k := t.made[p]; k != 0 && (k != madeDir || hdr.Typeflag != tar.TypeDir) {
			if err := t.removeAll(p); err != nil {
				return err
			}
		}
	} else if fi, err := os.Lstat(full); err == nil && (!fi.IsDir() || hdr.Typeflag != tar.TypeDir) {
		if err := os.RemoveAll(full); err != nil {
			return err
		}
	}
	if err := t.create(ctx, p, full, hdr, tr); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		t.dirs = append(t.dirs, hdr)
	}
	t.unpacked[full] = struct{}{}
	return nil
}

// mkparentExact makes the directories above p that do not exist, mode
// 0755, as archive.Apply's mkparent does without parents.
func (t *freshTree) mkparentExact(p string) error {
	dir := path.Dir(p)
	if dir == "." || t.made[dir] == madeDir {
		return nil
	}
	if err := t.mkparentExact(dir); err != nil {
		return err
	}
	if err := mkdirMode(filepath.Join(t.root, dir), 0o755); err != nil {
		return err
	}
	t.made[dir] = madeDir
	return nil
}

// mkparentDisk is archive.Apply's mkparent without parents: the disk says
// what exists.
func mkparentDisk(p, root string) error {
	if fi, err := os.Lstat(p); err == nil {
		if fi.IsDir() {
			return nil
		}
		return &os.PathError{Op: "mkparent", Path: p, Err: syscall.ENOTDIR}
	} else if !os.IsNotExist(err) {
		return err
	}
	i := len(p)
	for i > len(root) && !os.IsPathSeparator(p[i-1]) {
		i--
	}
	if i > len(root)+1 {
		if err := mkparentDisk(p[:i-1], root); err != nil {
			return err
		}
	}
	if err := mkdirMode(p, 0o755); err != nil {
		if fi, err1 := os.Lstat(p); err1 == nil && fi.IsDir() {
			return nil
		}
		return err
	}
	return nil
}

// mkdirMode makes a directory with exactly perm, whatever the umask.
func mkdirMode(p string, perm os.FileMode) error {
	if err := os.Mkdir(p, perm); err != nil {
		return err
	}
	return os.Chmod(p, perm)
}

// validateWhiteout refuses a whiteout naming something outside its
// directory.
func validateWhiteout(p string) error {
	base := filepath.Base(p)
	dir := filepath.Dir(p)
	if base == whiteoutOpaqueDir || !strings.HasPrefix(base, whiteoutPrefix) {
		return nil
	}
	if !strings.HasSuffix(dir, string(filepath.Separator)) {
		dir += string(filepath.Separator)
	}
	if !strings.HasPrefix(filepath.Join(dir, base[len(whiteoutPrefix):]), dir) {
		return fmt.Errorf("invalid whiteout name: %v: %w", base, errInvalidArchive)
	}
	return nil
}

// whiteout handles a whiteout entry (write false) the way archive.Apply's
// whiteout conversions do: overlayfs's, or removing what it names.
func (t *freshTree) whiteout(hdr *tar.Header, full string) (write bool, err error) {
	base := filepath.Base(full)
	dir := filepath.Dir(full)
	if t.overlay {
		if base == whiteoutOpaqueDir {
			return false, unix.Setxattr(dir, "trusted.overlay.opaque", []byte{'y'}, 0)
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			original := filepath.Join(dir, base[len(whiteoutPrefix):])
			if err := unix.Mknod(original, unix.S_IFCHR, 0); err != nil {
				return false, err
			}
			if t.made != nil {
				t.made[rel(strings.TrimPrefix(original, t.root))] = madeOther
			}
			return false, os.Chown(original, hdr.Uid, hdr.Gid)
		}
		return true, nil
	}
	if base == whiteoutOpaqueDir {
		if _, ok := t.opaque[dir]; ok {
			return false, nil
		}
		t.opaque[dir] = struct{}{}
		if _, err := os.Lstat(dir); err != nil {
			return false, err
		}
		t.leaveExact() // what the walk removes is the disk's business
		return false, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					err = nil // parent was deleted
				}
				return err
			}
			if p == dir {
				return nil
			}
			if _, ok := t.unpacked[p]; !ok {
				if err := os.RemoveAll(p); err != nil { //nolint:gosec // G122: archive.Apply's walk, in a tree only this extraction writes
					return err
				}
				if info.IsDir() {
					return filepath.SkipDir
				}
			}
			return nil
		})
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		original := filepath.Join(dir, base[len(whiteoutPrefix):])
		if t.made != nil {
			return false, t.removeAll(rel(strings.TrimPrefix(original, t.root)))
		}
		return false, os.RemoveAll(original)
	}
	return true, nil
}

// create makes the entry hdr at full (p relative), then gives it its
// owner, xattrs, mode and times, as archive.Apply's createTarFile.
func (t *freshTree) create(ctx context.Context, p, full string, hdr *tar.Header, tr io.Reader) error {
	mode := hdr.FileInfo().Mode()
	kind := madeOther
	switch hdr.Typeflag {
	case tar.TypeDir:
		kind = madeDir
		exists := false
		if t.made != nil {
			exists = t.made[p] == madeDir
		} else if fi, err := os.Lstat(full); err == nil && fi.IsDir() {
			exists = true
		}
		if !exists {
			if err := mkdirMode(full, mode); err != nil {
				return err
			}
		}
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives still use TypeRegA
		return t.createFile(ctx, p, full, hdr, tr, mode)
	case tar.TypeBlock, tar.TypeChar, tar.TypeFifo:
		if err := mknodEntry(hdr, full); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := t.linkTarget(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := os.Link(target, full); err != nil {
			return err
		}
		if t.made != nil {
			// The new name is what the target is (a link to a symlink is a
			// symlink); a target the records do not know leaves them.
			k := t.made[rel(strings.TrimPrefix(target, t.root))]
			if k == 0 || !strings.HasPrefix(target, t.root+"/") {
				t.leaveExact()
			}
			kind = k
		}
	case tar.TypeSymlink:
		kind = madeSymlink
		if err := os.Symlink(hdr.Linkname, full); err != nil {
			return err
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unhandled tar header type %d", hdr.Typeflag)
	}
	if t.made != nil {
		t.made[p] = kind
	}
	if err := os.Lchown(full, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("failed to Lchown %q for UID %d, GID %d: %w", full, hdr.Uid, hdr.Gid, err)
	}
	isLink, fileOrDir := kind == madeSymlink, kind == madeDir
	if t.made == nil || hdr.Typeflag == tar.TypeLink {
		fi, err := os.Lstat(full)
		if err != nil {
			return err
		}
		isLink, fileOrDir = fi.Mode()&os.ModeSymlink != 0, fi.Mode().IsRegular() || fi.IsDir()
	}
	if err := setXattrs(hdr, func(k, v string) error { return unix.Lsetxattr(full, k, []byte(v), 0) }, fileOrDir); err != nil {
		return fmt.Errorf("failed to setxattr %q: %w", full, err)
	}
	if !isLink {
		if err := os.Chmod(full, mode); err != nil {
			return err
		}
	}
	return chtimesOf(full, hdr)
}

// createFile writes a regular file: created exclusively, then owner,
// xattrs, mode (after the owner, which clears set-id bits) through its
// descriptor; times once closed. The descriptor is a bare one, not an
// *os.File: os.OpenFile tries each file on the poller (two fcntl and an
// epoll_ctl that fails for a regular file), three system calls per file
// of a tree of many small ones.
func (t *freshTree) createFile(ctx context.Context, p, full string, hdr *tar.Header, tr io.Reader, mode os.FileMode) error {
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC | unix.O_CLOEXEC
	if t.made != nil {
		flags |= unix.O_EXCL // the records say nothing is there
	}
	fd, err := unix.Open(full, flags, unixMode(mode))
	if err != nil {
		return &os.PathError{Op: "open", Path: full, Err: err}
	}
	if t.made != nil {
		t.made[p] = madeOther
	}
	err = func() error {
		buf := freshCopyBuffers.Get().(*[]byte)
		defer freshCopyBuffers.Put(buf)
		body := readerFunc(func(p []byte) (int, error) {
			if cause := context.Cause(ctx); cause != nil {
				return 0, cause
			}
			return tr.Read(p)
		})
		if _, err := io.CopyBuffer(fdWriter{fd: fd, path: full}, body, *buf); err != nil {
			return err
		}
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("failed to Lchown %q for UID %d, GID %d: %w", full, hdr.Uid, hdr.Gid, err)
		}
		if err := setXattrs(hdr, func(k, v string) error { return unix.Fsetxattr(fd, k, []byte(v), 0) }, true); err != nil {
			return fmt.Errorf("failed to setxattr %q: %w", full, err)
		}
		if err := unix.Fchmod(fd, unixMode(mode)); err != nil {
			return &os.PathError{Op: "chmod", Path: full, Err: err}
		}
		return nil
	}()
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = &os.PathError{Op: "close", Path: full, Err: cerr}
	}
	if err != nil {
		return err
	}
	return chtimesOf(full, hdr)
}

// unixMode is mode's permission and set-id bits as the system calls take
// them (os.Chmod's conversion).
func unixMode(mode os.FileMode) uint32 {
	m := uint32(mode.Perm())
	if mode&os.ModeSetuid != 0 {
		m |= unix.S_ISUID
	}
	if mode&os.ModeSetgid != 0 {
		m |= unix.S_ISGID
	}
	if mode&os.ModeSticky != 0 {
		m |= unix.S_ISVTX
	}
	return m
}

// fdWriter writes to a file descriptor opened for writing (the file
// path); its errors are *os.PathError, as an *os.File's.
type fdWriter struct {
	fd   int
	path string
}

func (w fdWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.Write(w.fd, p[written:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return written, &os.PathError{Op: "write", Path: w.path, Err: err}
		}
		if n == 0 {
			return written, &os.PathError{Op: "write", Path: w.path, Err: io.ErrShortWrite}
		}
		written += n
	}
	return written, nil
}

// readerFunc adapts a function to io.Reader.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// linkTarget is where a hard link's target is: inside the root, its
// directories' symlinks followed, as archive.Apply's hardlinkRootPath.
func (t *freshTree) linkTarget(linkname string) (string, error) {
	dir, base := filepath.Split(linkname)
	var pp string
	if d := rel(dir); t.made != nil && (d == "" || t.dirsOnly(path.Join(d, "x"))) {
		pp = filepath.Join(t.root, d)
	} else {
		var err error
		if pp, err = fs.RootPath(t.root, dir); err != nil {
			return "", err
		}
	}
	target := filepath.Join(pp, base)
	if !strings.HasPrefix(target, t.root) {
		target = t.root
	}
	return target, nil
}

// setXattrs sets the entry's xattrs with set, skipping as archive.Apply
// does: trusted.* ones (never from an archive), those the filesystem does
// not support, and user.* ones on what cannot hold them (fileOrDir false).
func setXattrs(hdr *tar.Header, set func(k, v string) error, fileOrDir bool) error {
	for key, value := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, paxSchilyXattr)
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.") {
			continue // archive.Apply refuses them with ENOTSUP, which it ignores
		}
		err := set(name, value)
		if err == nil {
			continue
		}
		if errors.Is(err, syscall.EPERM) && strings.HasPrefix(name, "user.") && !fileOrDir {
			continue
		}
		if errors.Is(err, syscall.ENOTSUP) {
			continue
		}
		return fmt.Errorf("key %q: %w", name, err)
	}
	return nil
}

// mknodEntry makes a device or FIFO, refusing device numbers that do not
// fit (as archive.Apply).
func mknodEntry(hdr *tar.Header, full string) error {
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeFifo:
		mode |= unix.S_IFIFO
	}
	if hdr.Devmajor < 0 || hdr.Devmajor > 1<<32-1 || hdr.Devminor < 0 || hdr.Devminor > 1<<32-1 {
		return fmt.Errorf("device number %d:%d for %q out of range: %w", hdr.Devmajor, hdr.Devminor, hdr.Name, errInvalidArchive)
	}
	return unix.Mknod(full, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))) //nolint:gosec // G115: both numbers checked to fit above
}

var (
	minTime = time.Unix(0, 0)
	maxTime = time.Unix(0, 1<<63-1)
)

// boundTime is archive.Apply's: a time a timespec cannot hold is the epoch.
func boundTime(t time.Time) time.Time {
	if t.Before(minTime) || t.After(maxTime) {
		return minTime
	}
	return t
}

// chtimesOf gives p (not following a symlink) the entry's times: mtime,
// and the later of atime and mtime.
func chtimesOf(p string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.Before(hdr.ModTime) {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{
		unix.NsecToTimespec(boundTime(atime).UnixNano()),
		unix.NsecToTimespec(boundTime(hdr.ModTime).UnixNano()),
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("failed call to UtimesNanoAt for %s: %w", p, err)
	}
	return nil
}
