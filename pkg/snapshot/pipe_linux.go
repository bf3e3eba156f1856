package snapshot

import (
	"os"

	"golang.org/x/sys/unix"
)

// setPipeSize asks for a pipe of n bytes; the kernel may refuse (past
// /proc/sys/fs/pipe-max-size for a user without the right), and the pipe
// then keeps its size. (Not through Fd, which would make f blocking.)
func setPipeSize(f *os.File, n int) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, n) })
	}
}
