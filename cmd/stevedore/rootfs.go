package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/rootfs"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// rootfsWriter writes a pull's root filesystem, in one pass from where it
// is.
type rootfsWriter struct {
	// dir fills dir, a new empty directory.
	dir func(ctx context.Context, dir string) error
	// tar writes it as a tar stream; nil means dir into a temporary
	// directory, then a tar of that.
	tar func(ctx context.Context, w io.Writer) error
	// from says where the bytes came from, for the summary.
	from string
	// place, when set, moves a directory already filled (or being filled)
	// into dest, instead of dir through placeDir; a tar is then not
	// written.
	place func(ctx context.Context, dest string) error
}

// writeTar writes the root filesystem as a tar stream.
func (r rootfsWriter) writeTar(ctx context.Context, w io.Writer) error {
	if r.tar != nil {
		return r.tar(ctx, w)
	}
	tmp, err := os.MkdirTemp("", "stevedore-tar-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	root := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil { //nolint:gosec // G301: a root filesystem's top directory is world-readable, like /
		return err
	}
	if err := r.dir(ctx, root); err != nil {
		return err
	}
	return archive.WriteDiff(ctx, w, "", root)
}

// rootfsOf says how to write the root filesystem of the pull's result:
//
//   - embedded, from the snapshot in this process's store (no blob read,
//     nothing decompressed again);
//   - with --nats, streamed from the node that holds the snapshot
//     (pkg/rootfs: a grant for this build, then one tar over HTTP, checked
//     against the digest the node sends after it);
//   - from the registry (or the session's layouts) only when that node
//     does not answer, every blob and layer verified as it streams.
//
// A snapshot that is not an image's (a file, a checkout, a local
// directory) has no registry to fall back to.
func rootfsOf(ctx context.Context, out client.Outcome, f *fleet, sf serviceFlags, buildID string) (rootfsWriter, error) {
	layers, ref := layersOf(out)
	key, node := snapshotKeyOf(out), snapshotNodeOf(out)
	if key == "" && len(layers) == 0 {
		return rootfsWriter{from: "no layers", dir: func(context.Context, string) error { return nil }}, nil
	}
	if f.stack != nil {
		store := f.stack.snap.Store()
		if key != "" && store.HasKey(ctx, key) {
			return rootfsWriter{
				from: "snapshot " + key + " on this node",
				dir:  func(ctx context.Context, dir string) error { return store.Export(ctx, key, dir) },
				tar:  func(ctx context.Context, w io.Writer) error { return store.WriteTar(ctx, key, w) },
			}, nil
		}
	}
	var unreachable error
	if key != "" && node != "" {
		s, err := rootfs.Open(ctx, f.js.Conn(), http.DefaultClient, node, rootfs.Request{Build: buildID, SnapshotKey: key})
		switch {
		case err == nil:
			return streamed(s, key, node), nil
		case errors.Is(err, rootfs.ErrUnreachable):
			unreachable = err
		default:
			return rootfsWriter{}, err
		}
	}
	if strings.HasPrefix(key, "content-") || len(layers) == 0 {
		return rootfsWriter{}, fmt.Errorf("snapshot %s: %w (a snapshot that is not an image's has no other source)", key, unreachable)
	}
	reg, err := registry.New(registry.Config{Insecure: sf.insecure, DockerConfigDir: sf.dockerConfig})
	if err != nil {
		return rootfsWriter{}, err
	}
	source := snapshot.BlobSourceFunc(func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
		if ref == "" && f.served != nil {
			return f.served.open(ctx, d)
		}
		if ref == "" {
			return nil, fmt.Errorf("blob %s: no reference to fetch it from", d.Digest)
		}
		return reg.Open(ctx, ref, d)
	})
	from := "the registry"
	if ref == "" {
		from = "the session's layouts"
	}
	if unreachable != nil {
		from += ", node " + node + " not answering"
	}
	return rootfsWriter{
		from: from,
		dir:  func(ctx context.Context, dir string) error { return snapshot.Materialize(ctx, layers, dir, source) },
	}, nil
}

// streamed writes the root filesystem from a node's stream.
func streamed(s *rootfs.Stream, key, node string) rootfsWriter {
	return rootfsWriter{
		from: "snapshot " + key + " streamed from node " + node,
		dir: func(ctx context.Context, dir string) error {
			defer func() { _ = s.Close() }()
			if err := snapshot.ApplyTar(ctx, dir, s); err != nil {
				return errors.Join(err, s.Verify())
			}
			return s.Verify()
		},
		tar: func(_ context.Context, w io.Writer) error {
			defer func() { _ = s.Close() }()
			if _, err := io.Copy(w, s); err != nil {
				return err
			}
			return s.Verify()
		},
	}
}

// snapshotNodeOf is the node holding the outcome's snapshot; empty when
// none.
func snapshotNodeOf(out client.Outcome) string {
	switch {
	case out.Snapshot != nil:
		return out.Snapshot.Node
	case out.Hit != nil:
		return out.Hit.Record.Node
	}
	return ""
}

// placeDir fills a directory beside dest with fill and moves it into
// place: renamed to dest when dest is missing or empty; otherwise each of
// its top-level entries replaces the one of the same name in dest. What
// fill leaves after a failure is removed, so dest never holds a partial
// or unverified tree.
func placeDir(ctx context.Context, dest string, fill func(ctx context.Context, dir string) error) error {
	tmp, err := besideDir(dest)
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	if err := fill(ctx, tmp); err != nil {
		return err
	}
	return moveDir(ctx, tmp, dest)
}

// besideDir makes a new empty directory (mode 0755) beside dest, to be
// filled and moved into place by moveDir.
func besideDir(dest string) (string, error) {
	dest = filepath.Clean(dest)
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil { //nolint:gosec // G301: the parent of an output directory
		return "", err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dest)+".stevedore-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil { //nolint:gosec // G302: a root filesystem's top directory is world-readable, like /
		return "", errors.Join(err, os.Remove(tmp))
	}
	return tmp, nil
}

// moveDir moves the filled directory tmp (besideDir's) into place as
// dest: renamed to dest when dest is missing or empty; otherwise each of
// its top-level entries replaces the one of the same name in dest.
func moveDir(ctx context.Context, tmp, dest string) error {
	dest = filepath.Clean(dest)
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	entries, err := os.ReadDir(dest)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.Rename(tmp, dest)
	case err != nil:
		return err
	case len(entries) == 0:
		if err := os.Remove(dest); err != nil {
			return err
		}
		return os.Rename(tmp, dest)
	}
	made, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range made {
		target := filepath.Join(dest, e.Name())
		if err := os.RemoveAll(target); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(tmp, e.Name()), target); err != nil {
			return err
		}
	}
	return nil
}
