package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// An export reads a committed snapshot back as the root filesystem it
// holds, in one pass over the files the snapshotter keeps: no blob is read
// and nothing is decompressed again. The snapshot's layers are read as a
// union, the way overlayfs presents them (an overlay whiteout, a 0:0
// character device, hides what is below it; a directory marked opaque
// hides the directories below it), so neither a mount nor CAP_SYS_ADMIN is
// needed, and the snapshot is held by a view while it is read (prune
// cannot remove it).
//
// Hard links: names that share an inode within one layer's directory share
// one in the output. A link a layer made to a file of a lower layer is a
// copy on overlayfs (the upper directory cannot link below it), so it is
// a separate file in the output.

// Export writes the root filesystem of the committed snapshot key into
// dir (created when missing; what dir holds is replaced where the snapshot
// has the same name), with modes, owners, times, extended attributes,
// device nodes, symlinks and hard links. The snapshot is one Unpack or
// Build committed, so what is written was verified when it was made.
//
// Errors: the snapshot is not here or not committed; the file system's.
func (s *Store) Export(ctx context.Context, key, dir string) error {
	return s.withUnion(ctx, key, func(u *union) error {
		if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: a root filesystem's top directory is world-readable, like /
			return err
		}
		return u.writeDir(ctx, dir)
	})
}

// WriteTar writes the root filesystem of the committed snapshot key to w
// as one tar stream (PAX, numeric owners, hard links as links), which
// containerd's archive.Apply or GNU tar unpack to the tree Export writes.
//
// Errors: as Export's, and w's.
func (s *Store) WriteTar(ctx context.Context, key string, w io.Writer) error {
	return s.withUnion(ctx, key, func(u *union) error { return u.writeTar(ctx, w) })
}

// withUnion holds a view of the committed snapshot key while fn reads its
// layers.
func (s *Store) withUnion(ctx context.Context, key string, fn func(*union) error) error {
	info, err := s.sn.Stat(ctx, key)
	if err != nil {
		return fmt.Errorf("export snapshot %s: %w", key, err)
	}
	if info.Kind != snapshots.KindCommitted {
		return fmt.Errorf("export snapshot %s: not committed", key)
	}
	view := activePrefix + "export-" + nonce() + "-" + key
	mounts, err := s.sn.View(ctx, view, key)
	if err != nil {
		return fmt.Errorf("export snapshot %s: view: %w", key, err)
	}
	defer func() { _ = s.sn.Remove(context.WithoutCancel(ctx), view) }()
	layers, err := layerDirs(mounts)
	if err != nil {
		return fmt.Errorf("export snapshot %s: %w", key, err)
	}
	u, err := newUnion(layers)
	if err != nil {
		return fmt.Errorf("export snapshot %s: %w", key, err)
	}
	if err := fn(u); err != nil {
		return fmt.Errorf("export snapshot %s: %w", key, err)
	}
	return nil
}

// layerDirs are the directories of a view's layers, top first.
func layerDirs(mounts []mount.Mount) ([]string, error) {
	if len(mounts) != 1 {
		return nil, fmt.Errorf("unexpected %d mounts for a view", len(mounts))
	}
	m := mounts[0]
	switch m.Type {
	case "bind", "rbind":
		return []string{m.Source}, nil
	case "overlay":
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				return strings.Split(v, ":"), nil
			}
		}
		return nil, fmt.Errorf("overlay view without lowerdir: %v", m.Options)
	}
	return nil, fmt.Errorf("unsupported mount type %q", m.Type)
}

// unionEntry is one name of the union and the layer file it comes from.
type unionEntry struct {
	rel   string // slash-separated, relative to the root
	src   string // the file in its layer's directory
	layer int
	info  fs.FileInfo
}

// union is the merged tree of a stack of layer directories.
type union struct {
	entries []unionEntry // parents before children
}

// newUnion merges layers (top first) as overlayfs does.
func newUnion(layers []string) (*union, error) {
	seen := map[string]bool{}   // rel → is a directory, for names decided
	hidden := map[string]bool{} // names the layers above hid from the lower ones
	var out []unionEntry
	for li, root := range layers {
		var hide []string // this layer's whiteouts and opaque dirs, for the layers below
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
			rel = filepath.ToSlash(rel)
			if hiddenBy(rel, hidden, seen) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if isWhiteout(info) {
				hide = append(hide, rel)
				return nil
			}
			if isDir, ok := seen[rel]; ok {
				if isDir && d.IsDir() {
					if isOpaque(p) {
						hide = append(hide, rel+"/")
					}
					return nil // a directory over a directory: merge the children
				}
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			seen[rel] = d.IsDir()
			out = append(out, unionEntry{rel: rel, src: p, layer: li, info: info})
			if d.IsDir() && isOpaque(p) {
				hide = append(hide, rel+"/")
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, h := range hide {
			hidden[h] = true
		}
	}
	slices.SortFunc(out, func(a, b unionEntry) int { return strings.Compare(a.rel, b.rel) })
	return &union{entries: out}, nil
}

// hiddenBy reports whether rel is hidden from the current layer: a
// whiteout of it or of a parent above, an opaque parent above (recorded
// as "dir/"), or a parent that an upper layer made a non-directory.
func hiddenBy(rel string, hidden, seen map[string]bool) bool {
	if hidden[rel] {
		return true
	}
	for i := 0; i < len(rel); i++ {
		if rel[i] != '/' {
			continue
		}
		parent := rel[:i]
		if hidden[parent] || hidden[parent+"/"] {
			return true
		}
		if isDir, ok := seen[parent]; ok && !isDir {
			return true
		}
	}
	return false
}

// isWhiteout reports an overlay whiteout: a 0:0 character device.
func isWhiteout(info fs.FileInfo) bool {
	if info.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}

// isOpaque reports an overlay opaque directory.
func isOpaque(p string) bool {
	for _, name := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		buf := make([]byte, 1)
		n, err := unix.Lgetxattr(p, name, buf)
		if err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}

// inodeKey names a file's inode in one layer.
type inodeKey struct {
	layer int
	dev   uint64
	ino   uint64
}

func keyOf(e unionEntry) (inodeKey, bool) {
	st, ok := e.info.Sys().(*syscall.Stat_t)
	if !ok || !e.info.Mode().IsRegular() || st.Nlink < 2 {
		return inodeKey{}, false
	}
	return inodeKey{layer: e.layer, dev: uint64(st.Dev), ino: st.Ino}, true //nolint:unconvert // Dev's type differs by architecture
}

// writeDir writes the union into dir. Into an empty dir, the regular
// files are copied by several workers once every directory is made, and
// nothing is looked up before it is written (the union's names are
// unique); into a dir that holds files, one entry after the other, each
// replacing what is there.
func (u *union) writeDir(ctx context.Context, dir string) error {
	fresh := isEmptyDir(dir)
	links := map[inodeKey]string{}
	var dirs, files, linked []unionEntry
	for i, e := range u.entries {
		if i%256 == 0 {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
		}
		dst := filepath.Join(dir, filepath.FromSlash(e.rel))
		if fresh && e.info.Mode().IsRegular() {
			// Copied below; a second name of an inode is linked to the
			// first once that is written.
			if k, ok := keyOf(e); ok {
				if _, ok := links[k]; ok {
					linked = append(linked, e)
					continue
				}
				links[k] = dst
			}
			files = append(files, e)
			continue
		}
		if err := writeEntry(e, dst, links, !fresh); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
		if e.info.IsDir() {
			dirs = append(dirs, e)
		}
	}
	if err := copyFiles(ctx, dir, files); err != nil {
		return err
	}
	for _, e := range linked {
		k, _ := keyOf(e)
		if err := os.Link(links[k], filepath.Join(dir, filepath.FromSlash(e.rel))); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	// A directory's times last: writing its children changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		e := dirs[i]
		dst := filepath.Join(dir, filepath.FromSlash(e.rel))
		if err := setTimes(dst, e.info); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	return nil
}

// copyFiles writes the regular files into dir (new names, their
// directories made) with as many workers as there are processors (at
// least two: a copy also waits for memory).
func copyFiles(ctx context.Context, dir string, files []unionEntry) error {
	g, ctx := errgroup.WithContext(ctx)
	next := make(chan unionEntry)
	for range max(2, runtime.GOMAXPROCS(0)) {
		g.Go(func() error {
			for e := range next {
				if err := writeEntry(e, filepath.Join(dir, filepath.FromSlash(e.rel)), nil, false); err != nil {
					return fmt.Errorf("%s: %w", e.rel, err)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(next)
		for _, e := range files {
			select {
			case next <- e:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		return nil
	})
	return g.Wait()
}

// writeEntry makes dst what e is; with replace, it replaces what dst was
// unless both are directories (without, dst must not exist). A regular
// file that links records is a link to the name recorded (links nil:
// copied).
func writeEntry(e unionEntry, dst string, links map[inodeKey]string, replace bool) error {
	mode := e.info.Mode()
	st, _ := e.info.Sys().(*syscall.Stat_t)
	if replace {
		if err := clearFor(dst, mode); err != nil {
			return err
		}
	}
	switch {
	case mode.IsDir():
		if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case mode.IsRegular():
		if k, ok := keyOf(e); ok && links != nil {
			if first, ok := links[k]; ok {
				return os.Link(first, dst)
			}
			links[k] = dst
		}
		// Owner, extended attributes, mode and times through the
		// descriptors: no path is looked up again.
		return copyFile(e, dst)
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(e.src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case mode&(fs.ModeDevice|fs.ModeNamedPipe) != 0:
		if st == nil {
			return errors.New("no device number")
		}
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil { //nolint:gosec // G115: a device number from stat
			return err
		}
	case mode&fs.ModeSocket != 0:
		return nil // sockets are not part of a root filesystem
	default:
		return fmt.Errorf("unsupported file type %s", mode.Type())
	}
	if st != nil {
		if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if err := copyXattrs(e.src, dst, overlayXattr); err != nil {
		return err
	}
	if mode&fs.ModeSymlink == 0 {
		// After chown, which clears setuid and setgid.
		if err := os.Chmod(dst, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	if mode.IsDir() {
		return nil
	}
	return setTimes(dst, e.info)
}

// clearFor removes what dst is, unless both it and what replaces it (mode)
// are directories.
func clearFor(dst string, mode fs.FileMode) error {
	old, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if old.IsDir() && mode.IsDir() {
		return nil
	}
	return os.RemoveAll(dst)
}

// copyFile copies a regular file: its bytes (copy_file_range: a reflink
// where the file system shares extents, an in-kernel copy otherwise), then
// its owner, extended attributes (not overlayfs's), mode (after the owner,
// which clears setuid and setgid) and times, each through the descriptors.
// The descriptors are the kernel's alone: an *os.File costs two or three
// fcntl calls more per file (made non-blocking for the poller, which
// refuses a regular file, then blocking again).
func copyFile(e unionEntry, dst string) error {
	st, ok := e.info.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no stat")
	}
	in, err := unix.Open(e.src, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: e.src, Err: err}
	}
	defer func() { _ = unix.Close(in) }()
	out, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dst, Err: err}
	}
	if err := copyFd(in, out, e.info.Size()); err != nil {
		return errors.Join(fmt.Errorf("copy %s: %w", e.src, err), unix.Close(out))
	}
	if err := fileMeta(in, out, st, e.info.ModTime()); err != nil {
		return errors.Join(err, unix.Close(out))
	}
	return unix.Close(out)
}

// copyFd copies size bytes from in to out with copy_file_range, or with
// read and write where the kernel refuses it (two file systems, say).
func copyFd(in, out int, size int64) error {
	var done int64
	for done < size {
		n, err := unix.CopyFileRange(in, nil, out, nil, int(min(size-done, 1<<30)), 0)
		if err != nil {
			if done == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) ||
				errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM)) {
				return copyRW(in, out, size)
			}
			return err
		}
		if n == 0 {
			return fmt.Errorf("changed while read: %d bytes, not %d", done, size)
		}
		done += int64(n)
	}
	return nil
}

// copyRW copies size bytes from in to out through a buffer.
func copyRW(in, out int, size int64) error {
	buf := tarCopyBuffers.Get().(*[]byte)
	defer tarCopyBuffers.Put(buf)
	var done int64
	for done < size {
		n, err := unix.Read(in, (*buf)[:min(int64(len(*buf)), size-done)])
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("changed while read: %d bytes, not %d", done, size)
		}
		for w := 0; w < n; {
			m, err := unix.Write(out, (*buf)[w:n])
			if err != nil {
				return err
			}
			w += m
		}
		done += int64(n)
	}
	return nil
}

// fileMeta gives the file open as out the owner, extended attributes,
// mode and times of the one open as in, whose stat is st.
func fileMeta(in, out int, st *syscall.Stat_t, mtime time.Time) error {
	if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := copyFdXattrs(in, out); err != nil {
		return err
	}
	if err := unix.Fchmod(out, st.Mode&0o7777); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(time.Unix(st.Atim.Unix()).UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return futimens(out, ts)
}

// setTimes gives dst the access and modification times of info, without
// following a symlink.
func setTimes(dst string, info fs.FileInfo) error {
	st, ok := info.Sys().(*syscall.Stat_t)
	atime := info.ModTime()
	if ok {
		atime = time.Unix(st.Atim.Unix())
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(info.ModTime().UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// tarCopyBuffers carry files' bytes into a tar stream.
var tarCopyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// writeTar writes the union as a tar stream.
func (u *union) writeTar(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[inodeKey]string{}
	for i, e := range u.entries {
		if i%256 == 0 {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
		}
		if err := writeTarEntry(tw, e, links); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	return tw.Close()
}

func writeTarEntry(tw *tar.Writer, e unionEntry, links map[inodeKey]string) error {
	mode := e.info.Mode()
	if mode&fs.ModeSocket != 0 {
		return nil
	}
	link := ""
	if mode&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(e.src); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(e.info, link)
	if err != nil {
		return err
	}
	hdr.Name = e.rel
	if mode.IsDir() {
		hdr.Name += "/"
	}
	hdr.Format = tar.FormatPAX
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	names, err := listXattrs(e.src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if overlayXattr(name) {
			continue
		}
		v, err := getXattr(e.src, name)
		if err != nil {
			return err
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = string(v)
	}
	if k, ok := keyOf(e); ok {
		if first, ok := links[k]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return tw.WriteHeader(hdr)
		}
		links[k] = e.rel
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !mode.IsRegular() {
		return nil
	}
	// A bare descriptor, not an *os.File: os.Open tries each file on the
	// poller (two fcntl and an epoll_ctl that fails for a regular file),
	// three system calls per file of a tree of many small ones.
	fd, err := unix.Open(e.src, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: e.src, Err: err}
	}
	defer func() { _ = unix.Close(fd) }()
	// Reads of 1 MiB rather than the 32 KiB of io.Copy, and no read past
	// the size the header says (the read that would find the end is one
	// more system call per file; a committed snapshot does not change).
	buf := tarCopyBuffers.Get().(*[]byte)
	defer tarCopyBuffers.Put(buf)
	n, err := io.CopyBuffer(tw, io.LimitReader(fdReader{fd: fd, path: e.src}, hdr.Size), *buf)
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("changed while read: %d bytes, not %d", n, hdr.Size)
	}
	return nil
}

// fdReader reads a file descriptor opened for reading (the file path);
// its errors are *fs.PathError, as an *os.File's.
type fdReader struct {
	fd   int
	path string
}

func (r fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(r.fd, p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, &fs.PathError{Op: "read", Path: r.path, Err: err}
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
