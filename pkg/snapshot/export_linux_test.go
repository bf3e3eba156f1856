//go:build linux

package snapshot

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyFd: both ways of copying a file's bytes (copy_file_range, and
// read and write where the kernel refuses it) copy them all, across more
// than one buffer, and say so when the file is shorter than its stat.
func TestCopyFd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // > 4 MiB: several buffers
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, copyBytes := range map[string]func(in, out int, size int64) error{"copyFd": copyFd, "copyRW": copyRW} {
		for _, size := range []int64{int64(len(want)), int64(len(want)) + 1} {
			in, err := unix.Open(src, unix.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, name)
			_ = os.Remove(dst)
			out, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			err = copyBytes(in, out, size)
			_ = unix.Close(in)
			_ = unix.Close(out)
			if size > int64(len(want)) {
				if err == nil {
					t.Errorf("%s of a file shorter than its size: no error", name)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s copied %d bytes, not the %d of the file", name, len(got), len(want))
			}
		}
	}
}
