package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// PruneResult says what Prune removed.
type PruneResult struct {
	// Snapshots is how many committed snapshots were removed.
	Snapshots int
	// Blobs is how many blobs were removed from the content store.
	Blobs int
	// Bytes is the uncompressed size of the removed snapshots plus the size
	// of the removed blobs.
	Bytes int64
}

// Prune removes every committed snapshot of the fleet that is neither one
// of keep (the names something still references: chainIDs of layer chains,
// keys of content snapshots) nor a parent of one, and every blob no kept
// snapshot came from. Snapshots under a view or an active snapshot
// (someone's mounted root filesystem) are kept as if listed in keep.
// Builders' snapshots (BuilderPrefix) are never removed, and what they
// hold is kept: their parents, and the snapshots their containerd gc
// labels (LabelGCRefSnapshot…) name, in the builder's namespace. A kept
// snapshot's gc references are kept too. It must not run while Unpack
// does.
func (s *Store) Prune(ctx context.Context, keep []string) (PruneResult, error) {
	var res PruneResult
	all := map[string]snapshots.Info{}   // committed, the fleet's
	every := map[string]snapshots.Info{} // every snapshot
	roots := append([]string(nil), keep...)
	err := s.sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		every[info.Name] = info
		switch {
		case strings.HasPrefix(info.Name, BuilderPrefix):
			roots = append(roots, info.Name)
		case info.Kind == snapshots.KindCommitted:
			all[info.Name] = info
		default:
			roots = append(roots, info.Name)
		}
		return nil
	})
	if err != nil && !errdefs.IsNotFound(err) {
		return res, fmt.Errorf("prune: %w", err)
	}
	kept := map[string]bool{}
	for len(roots) > 0 {
		name := roots[len(roots)-1]
		roots = roots[:len(roots)-1]
		for name != "" && !kept[name] {
			info, ok := every[name]
			if !ok {
				break
			}
			kept[name] = true
			roots = append(roots, gcRefs(info)...)
			name = info.Parent
		}
	}
	// Remove children before their parents.
	for removedSome := true; removedSome; {
		removedSome = false
		parents := map[string]bool{}
		for _, info := range every {
			parents[info.Parent] = true
		}
		for name, info := range all {
			if kept[name] || parents[name] {
				continue
			}
			if err := s.sn.Remove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
				return res, fmt.Errorf("prune snapshot %s: %w", name, err)
			}
			n, _ := strconv.ParseInt(info.Labels[LabelSize], 10, 64)
			res.Snapshots++
			res.Bytes += n
			delete(all, name)
			delete(every, name)
			removedSome = true
		}
	}
	blobs := map[digest.Digest]bool{}
	for name := range kept {
		if b := every[name].Labels[LabelBlob]; b != "" {
			blobs[digest.Digest(b)] = true
		}
	}
	var stale []content.Info
	if err := s.cs.Walk(ctx, func(info content.Info) error {
		if !blobs[info.Digest] {
			stale = append(stale, info)
		}
		return nil
	}); err != nil && !errors.Is(err, fs.ErrNotExist) { // no blob was ever stored
		return res, fmt.Errorf("prune: %w", err)
	}
	for _, info := range stale {
		if err := s.cs.Delete(ctx, info.Digest); err != nil && !errdefs.IsNotFound(err) {
			return res, fmt.Errorf("prune blob %s: %w", info.Digest, err)
		}
		res.Blobs++
		res.Bytes += info.Size
	}
	return res, nil
}

// gcRefs are the snapshots info's containerd gc labels keep, as Store
// names: a builder's labels name snapshots of the builder's own namespace.
func gcRefs(info snapshots.Info) []string {
	var out []string
	for k, v := range info.Labels {
		if !strings.HasPrefix(k, LabelGCRefSnapshot) || v == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(info.Name, BuilderPrefix); ok {
			ns, _, _ := strings.Cut(rest, "/")
			v = BuilderPrefix + ns + "/" + v
		}
		out = append(out, v)
	}
	return out
}

// Snapshots lists the fleet's committed snapshots (by chainID) on this
// node; builders' are not listed.
func (s *Store) Snapshots(ctx context.Context) ([]digest.Digest, error) {
	var out []digest.Digest
	err := s.sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted && !strings.HasPrefix(info.Name, BuilderPrefix) {
			out = append(out, digest.Digest(info.Name))
		}
		return nil
	})
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	return out, err
}
