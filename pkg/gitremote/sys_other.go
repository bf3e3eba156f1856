//go:build !linux

package gitremote

import (
	"os"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/index"
)

// lchtimes sets the times of p; symlinks keep theirs, since os has no
// call that does not follow them (only the Linux build sets them).
func lchtimes(p string, t time.Time) error {
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil
	}
	return os.Chtimes(p, t, t)
}

// fillStat leaves the stat fields of an index entry other than size and
// mtime zero: git refreshes them.
func fillStat(*index.Entry, os.FileInfo) {}
