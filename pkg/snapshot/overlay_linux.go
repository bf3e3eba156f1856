package snapshot

import (
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
)

func overlaySupported(root string) bool { return overlayutils.Supported(root) == nil }

func newOverlay(root string) (snapshots.Snapshotter, error) {
	return overlay.NewSnapshotter(root)
}
