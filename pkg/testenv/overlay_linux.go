package testenv

import (
	"testing"

	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
)

// Overlayfs requires what containerd's overlayfs snapshotter needs: root
// and an overlayfs that mounts in a directory like t.TempDir().
func Overlayfs(t testing.TB) {
	t.Helper()
	Root(t, "the overlayfs snapshotter mounts overlays")
	if err := overlayutils.Supported(t.TempDir()); err != nil {
		Lack(t, "needs overlayfs: it is not supported here: %v", err)
	}
}
