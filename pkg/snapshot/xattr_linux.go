//go:build linux

package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// copyOwnerMode gives dst the owner and then (chown clears setuid and
// setgid) the permission bits of src, whose FileInfo is fi.
func copyOwnerMode(src, dst string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no stat of " + src)
	}
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return unix.Chmod(dst, st.Mode&07777)
}

// copyXattrs copies the extended attributes of src to dst, but those skip
// names (nil: none).
func copyXattrs(src, dst string, skip func(name string) bool) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if skip != nil && skip(name) {
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
	return nil
}

// overlayXattr reports the attributes overlayfs keeps for itself
// (opaque directories, redirects), which a merged tree does not show.
func overlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

func listXattrs(path string) ([]string, error) {
	n, err := unix.Llistxattr(path, nil)
	if err != nil || n == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, n)
	n, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	start := 0
	for i, c := range buf[:n] {
		if c == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	return names, nil
}

func getXattr(path, name string) ([]byte, error) {
	n, err := unix.Lgetxattr(path, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	n, err = unix.Lgetxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// copyFdXattrs copies the extended attributes of the file open as in to
// the one open as out, but overlayfs's own.
func copyFdXattrs(in, out int) error {
	n, err := unix.Flistxattr(in, nil)
	if err != nil || n == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	buf := make([]byte, n)
	if n, err = unix.Flistxattr(in, buf); err != nil {
		return err
	}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" || overlayXattr(name) {
			continue
		}
		size, err := unix.Fgetxattr(in, name, nil)
		if err != nil {
			return err
		}
		v := make([]byte, size)
		if size, err = unix.Fgetxattr(in, name, v); err != nil {
			return err
		}
		if err := unix.Fsetxattr(out, name, v[:size], 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

// futimens sets the access and modification times of the file open as fd
// (utimensat with no path), to the nanosecond.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0) //nolint:gosec // G103: the times array, as utimensat takes it
	if errno != 0 {
		return errno
	}
	return nil
}
