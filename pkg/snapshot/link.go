//go:build linux

package snapshot

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// linkTree fills the empty directory dst with src's tree: every file,
// symlink, device and fifo a hard link to src's, every directory a new one
// with src's mode, owner, xattrs and times.
func linkTree(src, dst string) error {
	var dirs []string
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if !d.IsDir() {
			return os.Link(path, target) //nolint:gosec // G122: both trees are the store's own, and link(2) follows no symlink
		}
		if rel != "." {
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		}
		dirs = append(dirs, rel)
		return copyDirMeta(path, target)
	})
	if err != nil {
		return fmt.Errorf("link %s: %w", src, err)
	}
	// Times last: linking into a directory changes its mtime.
	for _, rel := range slices.Backward(dirs) {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(src, rel), &st); err != nil {
			return err
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dst, rel), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("link %s: %w", src, err)
		}
	}
	return nil
}

// copyDirMeta gives directory dst the mode, owner and xattrs of src.
func copyDirMeta(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if err := copyOwnerMode(src, dst, fi); err != nil {
		return err
	}
	return copyXattrs(src, dst, nil)
}
