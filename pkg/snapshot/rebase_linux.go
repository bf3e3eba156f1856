//go:build linux

package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// inheritDirs gives the directories of root (a layer extracted without
// its parent) that the layer has no entry of the owner, mode, times and
// xattrs (trusted ones aside) that the nearest layer below with that
// directory has, as an extraction on the parent does (containerd's
// archive, WithParents). parent is committed and names the layers below.
func (s *Store) inheritDirs(ctx context.Context, root, parent string, named *entryNames) error {
	dirs := named.implicitDirs()
	if len(dirs) == 0 {
		return nil
	}
	var lowers []string // nearest first
	for p := parent; p != ""; {
		info, err := s.sn.Stat(ctx, p)
		if err != nil {
			return err
		}
		dir := info.Labels[LabelDir]
		if dir == "" {
			return fmt.Errorf("snapshot %s has no directory label", p)
		}
		lowers = append(lowers, dir)
		p = info.Parent
	}
	for _, d := range dirs {
		for _, lower := range lowers {
			fi, err := os.Lstat(filepath.Join(lower, d))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if fi.IsDir() {
				if err := inheritDir(filepath.Join(lower, d), filepath.Join(root, d), fi); err != nil {
					return err
				}
			}
			break // a file below: replaced, the default mode stays
		}
	}
	return nil
}

// inheritDir gives dst the owner, mode, times and xattrs (not trusted.*,
// as overlay's opaque marker is) of the directory src.
func inheritDir(src, dst string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no stat of " + src)
	}
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Chmod(dst, st.Mode&07777); err != nil {
		return err
	}
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, "trusted.") {
			continue
		}
		v, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, v, 0); err != nil {
			return fmt.Errorf("set xattr %s of %s: %w", name, dst, err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}
