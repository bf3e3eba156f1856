//go:build !linux

package snapshot

import (
	"errors"

	"github.com/containerd/containerd/v2/core/snapshots"
)

func overlaySupported(string) bool { return false }

func newOverlay(string) (snapshots.Snapshotter, error) {
	return nil, errors.New("the overlayfs snapshotter needs Linux")
}
