//go:build !linux

package testenv

import (
	"runtime"
	"testing"
)

// Overlayfs requires what containerd's overlayfs snapshotter needs, which
// is Linux.
func Overlayfs(t testing.TB) {
	t.Helper()
	Lack(t, "needs overlayfs, which is Linux only, not %s", runtime.GOOS)
}
