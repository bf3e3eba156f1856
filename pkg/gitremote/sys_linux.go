//go:build linux

package gitremote

import (
	"os"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/index"
	"golang.org/x/sys/unix"
)

// lchtimes sets the access and modification times of p, not following a
// symlink.
func lchtimes(p string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lchtimes", Path: p, Err: err}
	}
	return nil
}

// fillStat copies into an index entry what git's index keeps of a file's
// stat: ctime, device, inode, owner (the low 32 bits, as git keeps them).
func fillStat(e *index.Entry, fi os.FileInfo) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	e.CreatedAt = time.Unix(st.Ctim.Unix())
	e.Dev, e.Inode = uint32(st.Dev), uint32(st.Ino) //nolint:gosec // G115: truncated as git truncates
	e.UID, e.GID = st.Uid, st.Gid
}
