package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// ExportChain writes into dir (new and empty, or missing) the root
// filesystem of the chain of layers, bottom first, as Export of the
// chain's top snapshot writes it, but while the chain is being made: each
// layer's directory is written into dir as soon as this store has
// committed that layer (verified: blob digest and diffID), on top of the
// layers below it, its overlay whiteouts removing what they hide and its
// opaque directories emptied of what is below them. So dir is finished
// moments after the top layer is committed, rather than an export after
// the whole chain. It waits for the Unpack (of this process) that makes
// the chain; it never starts one.
//
// A snapshotter that does not keep each layer in a directory of its own
// (native) waits for the top snapshot and exports it as Export does.
//
// dir is left with what was written when it fails, or when ctx ends
// first: write it beside the destination and rename.
//
// Errors: ctx's cause while waiting; the file system's.
func (s *Store) ExportChain(ctx context.Context, layers []events.Layer, dir string) error {
	if len(layers) == 0 {
		return errors.New("export chain: no layers")
	}
	chain := ChainIDs(layers)
	if s.kind != KindOverlay {
		top := chain[len(chain)-1]
		if err := s.waitCommitted(ctx, top); err != nil {
			return fmt.Errorf("export snapshot %s: %w", top, err)
		}
		return s.Export(ctx, top.String(), dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: a root filesystem's top directory is world-readable, like /
		return err
	}
	l := &layered{root: dir, dirs: map[string]fs.FileInfo{}}
	for i, chainID := range chain {
		if err := s.waitCommitted(ctx, chainID); err != nil {
			return fmt.Errorf("export snapshot %s: %w", chainID, err)
		}
		err := s.withLayerDir(ctx, chainID, func(src string) error {
			return l.add(ctx, src, i == 0)
		})
		if err != nil {
			return fmt.Errorf("export snapshot %s: %w", chainID, err)
		}
	}
	if err := l.finish(); err != nil {
		return fmt.Errorf("export snapshot %s: %w", chain[len(chain)-1], err)
	}
	return nil
}

// waitCommitted returns once the snapshot chainID is committed on this
// store, or ctx's cause.
func (s *Store) waitCommitted(ctx context.Context, chainID digest.Digest) error {
	for {
		s.mu.Lock()
		changed := s.commits
		s.mu.Unlock()
		if s.Has(ctx, chainID) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// committed tells the ExportChain waiting that a snapshot was committed.
func (s *Store) committed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.commits)
	s.commits = make(chan struct{})
}

// withLayerDir calls fn with the directory of the committed snapshot
// chainID's own layer (its upper directory on overlayfs), holding a view
// of it meanwhile so that prune cannot remove it.
func (s *Store) withLayerDir(ctx context.Context, chainID digest.Digest, fn func(dir string) error) error {
	info, err := s.sn.Stat(ctx, chainID.String())
	if err != nil {
		return err
	}
	if info.Kind != snapshots.KindCommitted {
		return errors.New("not committed")
	}
	view := activePrefix + "export-" + nonce() + "-" + chainID.String()
	mounts, err := s.sn.View(ctx, view, chainID.String())
	if err != nil {
		return fmt.Errorf("view: %w", err)
	}
	defer func() { _ = s.sn.Remove(context.WithoutCancel(ctx), view) }()
	dirs, err := layerDirs(mounts)
	if err != nil {
		return err
	}
	return fn(dirs[0])
}

// layered writes layer directories into root one on top of the other, as
// overlayfs would show them merged.
type layered struct {
	root string
	// dirs are the directories written, by name, with the file info of
	// the layer that wrote each last: their times are set once every
	// layer is written (writing children changes them).
	dirs map[string]fs.FileInfo
}

// add writes the layer directory src over what root holds; first says
// root is empty (the bottom layer), so nothing is looked up before it is
// written.
//
// One walk, parents first, removes what the layer hides or replaces (its
// whiteouts' names, the names it gives another type, what is below its
// opaque directories); then its directories and other entries that are not
// regular files are made in the walk's order, and its regular files are
// copied by several workers.
func (l *layered) add(ctx context.Context, src string, first bool) error {
	var dirs, files, linked []unionEntry
	var merged []bool // by dirs' index: a directory already there
	links := map[inodeKey]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := unionEntry{rel: filepath.ToSlash(rel), src: p, info: info}
		dst := filepath.Join(l.root, rel)
		exists := false
		switch {
		case first && isWhiteout(info):
			return nil // nothing below to hide
		case first:
		case isWhiteout(info):
			l.forget(e.rel)
			return os.RemoveAll(dst)
		default:
			if exists, err = l.clear(e, dst); err != nil {
				return fmt.Errorf("%s: %w", e.rel, err)
			}
		}
		if info.IsDir() {
			l.dirs[e.rel] = info
			dirs, merged = append(dirs, e), append(merged, exists)
			return nil
		}
		if !info.Mode().IsRegular() {
			dirs, merged = append(dirs, e), append(merged, false) // made in order with the directories
			return nil
		}
		// Copied once the directories are made; a second name of an inode
		// is linked to the first once that is written.
		if k, ok := keyOf(e); ok {
			if _, ok := links[k]; ok {
				linked = append(linked, e)
				return nil
			}
			links[k] = dst
		}
		files = append(files, e)
		return nil
	})
	if err != nil {
		return err
	}
	for i, e := range dirs {
		if i%256 == 0 {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
		}
		dst := filepath.Join(l.root, filepath.FromSlash(e.rel))
		if merged[i] {
			// Only e's extended attributes: remove those of the layer
			// below.
			if err := replaceXattrs(e.src, dst); err != nil {
				return fmt.Errorf("%s: %w", e.rel, err)
			}
		}
		if err := writeEntry(e, dst, nil, false); err != nil { // a directory there is kept
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	if err := copyFiles(ctx, l.root, files); err != nil {
		return err
	}
	for _, e := range linked {
		k, _ := keyOf(e)
		if err := os.Link(links[k], filepath.Join(l.root, filepath.FromSlash(e.rel))); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	return nil
}

// clear removes what a layer below left at dst unless both it and e are
// directories; then, when e is an opaque directory, it removes what that
// directory holds. It reports whether a directory is kept at dst.
func (l *layered) clear(e unionEntry, dst string) (bool, error) {
	old, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !old.IsDir() || !e.info.IsDir() {
		l.forget(e.rel)
		return false, os.RemoveAll(dst)
	}
	if isOpaque(e.src) {
		children, err := os.ReadDir(dst)
		if err != nil {
			return false, err
		}
		for _, c := range children {
			l.forget(e.rel + "/" + c.Name())
			if err := os.RemoveAll(filepath.Join(dst, c.Name())); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// replaceXattrs removes the extended attributes of dst that src lacks.
func replaceXattrs(src, dst string) error {
	have, err := listXattrs(dst)
	if err != nil {
		return err
	}
	if len(have) == 0 {
		return nil
	}
	want, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range have {
		if slices.Contains(want, name) && !overlayXattr(name) {
			continue
		}
		if err := unix.Lremovexattr(dst, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("remove xattr %s of %s: %w", name, dst, err)
		}
	}
	return nil
}

// forget drops rel, when it is a directory written, and every directory
// under it: a layer above removed or replaced them, so their times are
// not set (under that name may now be a symlink, which setting times
// under would follow).
func (l *layered) forget(rel string) {
	if _, ok := l.dirs[rel]; !ok {
		return
	}
	delete(l.dirs, rel)
	prefix := rel + "/"
	for d := range l.dirs {
		if strings.HasPrefix(d, prefix) {
			delete(l.dirs, d)
		}
	}
}

// finish gives every directory the times of the layer that wrote it last,
// children first.
func (l *layered) finish() error {
	names := make([]string, 0, len(l.dirs))
	for rel := range l.dirs {
		names = append(names, rel)
	}
	slices.Sort(names)
	for i := len(names) - 1; i >= 0; i-- {
		rel := names[i]
		if err := setTimes(filepath.Join(l.root, filepath.FromSlash(rel)), l.dirs[rel]); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	return nil
}
