//go:build !linux

package snapshot

import (
	"archive/tar"
	"context"
	"io"

	"github.com/containerd/containerd/v2/pkg/archive"
)

// isEmptyDir is false where applyFresh is archive.Apply.
func isEmptyDir(string) bool { return false }

// applyFresh is archive.Apply off Linux.
func applyFresh(ctx context.Context, root string, r io.Reader, overlay bool, filter func(*tar.Header) (bool, error)) error {
	var opts []archive.ApplyOpt
	if filter != nil {
		opts = append(opts, archive.WithFilter(filter))
	}
	_, err := archive.Apply(ctx, root, r, opts...)
	return err
}
