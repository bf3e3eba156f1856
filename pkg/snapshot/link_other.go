//go:build !linux

package snapshot

import (
	"context"
	"errors"
)

// linkTree shares snapshots' files on Linux only.
func linkTree(_, _ string) error { return errors.New("sharing snapshots needs Linux") }

// inheritDirs is needed by overlayfs stores only, which are Linux's.
func (*Store) inheritDirs(_ context.Context, _, _ string, _ *entryNames) error {
	return errors.New("rebasing snapshots needs Linux")
}
