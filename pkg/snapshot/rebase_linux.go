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
	if err := copyOwnerMode(src, dst, fi); err != nil {
		return err
	}
	if err := copyXattrs(src, dst, func(name string) bool { return strings.HasPrefix(name, "trusted.") }); err != nil {
		return err
	}
	st, _ := fi.Sys().(*syscall.Stat_t) // copyOwnerMode checked it
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}
