package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// BuilderPrefix starts the Store's name of every snapshot a builder (a
// buildkitd, a containerd) made through the snapshots API (Builders): a
// builder's name N in namespace NS is stored as BuilderPrefix+NS+"/"+N.
// The fleet's own snapshots (chainIDs, content keys, extract- leftovers)
// never start with it, so a builder can neither see, change nor remove
// them, and its names never collide with theirs (BuildKit names its layers
// by chainID too).
//
// Each namespace is one builder daemon's: containerd's metadata layer
// (in containerd, and in buildkitd's worker) removes, when it collects
// garbage, every snapshot of its snapshotter that its own database does
// not know, so two daemons must never see each other's snapshots.
const BuilderPrefix = "builder/"

// DefaultBuilderNamespace is the namespace Builders("") uses.
const DefaultBuilderNamespace = "default"

// Containerd's gc labels, which Prune honours on builders' snapshots.
const (
	// LabelGCRoot marks a snapshot containerd's gc must keep.
	LabelGCRoot = "containerd.io/gc.root"
	// LabelGCRefSnapshot starts the labels (containerd.io/gc.ref.snapshot.<snapshotter>[/<x>])
	// whose values name snapshots the labelled one keeps.
	LabelGCRefSnapshot = "containerd.io/gc.ref.snapshot."
	// LabelShared, on a builder's committed snapshot made by Share, is the
	// chainID of the fleet's snapshot whose files it shares.
	LabelShared = "dev.stevedore.snapshot.shared"
)

// ErrNotShareable is returned by Share when the fleet's snapshot is not on
// this node or was made before the Store recorded its directory.
var ErrNotShareable = errors.New("no shareable snapshot on this node")

// Builders is the Store's snapshotter as builders see it: containerd's
// snapshots.Snapshotter over the Store's own, with every name a builder
// gives (keys, parents, Walk's names) in the builder namespace
// (BuilderPrefix). It is what the snapshots API serves.
type Builders struct {
	s      *Store
	prefix string // BuilderPrefix + namespace + "/"
}

var (
	_ snapshots.Snapshotter = (*Builders)(nil)
	_ snapshots.Cleaner     = (*Builders)(nil)
)

// Builders returns the view of the Store that the builder daemon of
// namespace ns has (DefaultBuilderNamespace when empty; one path segment:
// a "/" in it is replaced by "_").
func (s *Store) Builders(ns string) *Builders {
	if ns == "" {
		ns = DefaultBuilderNamespace
	}
	return &Builders{s: s, prefix: BuilderPrefix + strings.ReplaceAll(ns, "/", "_") + "/"}
}

// StoreName is the Store's name of the builder's snapshot name.
func (b *Builders) StoreName(name string) string { return b.inNS(name) }

func (b *Builders) inNS(name string) string {
	if name == "" {
		return ""
	}
	return b.prefix + name
}

func (b *Builders) outNS(info snapshots.Info) snapshots.Info {
	info.Name = strings.TrimPrefix(info.Name, b.prefix)
	info.Parent = strings.TrimPrefix(info.Parent, b.prefix)
	return info
}

// Stat returns the info of the builder's snapshot key.
// Errors: errdefs.ErrNotFound.
func (b *Builders) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	info, err := b.s.sn.Stat(ctx, b.inNS(key))
	if err != nil {
		return snapshots.Info{}, err
	}
	return b.outNS(info), nil
}

// Update changes the labels of the builder's snapshot info.Name.
// Errors: errdefs.ErrNotFound, errdefs.ErrInvalidArgument.
func (b *Builders) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	info.Name = b.inNS(info.Name)
	info.Parent = b.inNS(info.Parent)
	out, err := b.s.sn.Update(ctx, info, fieldpaths...)
	if err != nil {
		return snapshots.Info{}, err
	}
	return b.outNS(out), nil
}

// Usage returns the resources the builder's snapshot key takes.
// Errors: errdefs.ErrNotFound.
func (b *Builders) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return b.s.sn.Usage(ctx, b.inNS(key))
}

// Mounts returns the mounts of the builder's active snapshot or view key.
// Errors: errdefs.ErrNotFound.
func (b *Builders) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return b.s.sn.Mounts(ctx, b.inNS(key))
}

// Prepare makes the builder's active snapshot key on parent (one of the
// builder's committed snapshots, or none).
// Errors: errdefs.ErrAlreadyExists, errdefs.ErrNotFound (parent).
func (b *Builders) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return b.s.sn.Prepare(ctx, b.inNS(key), b.inNS(parent), opts...)
}

// View makes the builder's read-only snapshot key of parent.
// Errors: errdefs.ErrAlreadyExists, errdefs.ErrNotFound (parent).
func (b *Builders) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return b.s.sn.View(ctx, b.inNS(key), b.inNS(parent), opts...)
}

// Commit commits the builder's active snapshot key as name, with the
// labels opts give.
// Errors: errdefs.ErrAlreadyExists (name), errdefs.ErrNotFound (key).
func (b *Builders) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return b.s.sn.Commit(ctx, b.inNS(name), b.inNS(key), opts...)
}

// Remove removes the builder's snapshot key. A snapshot Share made takes
// only its own links with it: the fleet's snapshot stays.
// Errors: errdefs.ErrNotFound, errdefs.ErrFailedPrecondition (it has children).
func (b *Builders) Remove(ctx context.Context, key string) error {
	return b.s.sn.Remove(ctx, b.inNS(key))
}

// Walk calls fn for the builder's snapshots that match one of fs
// (containerd's filter syntax on kind, name, parent and labels), all of
// them without filters.
// Errors: errdefs.ErrInvalidArgument (a filter), fn's.
func (b *Builders) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	filter, err := filters.ParseAll(fs...)
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	err = b.s.sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		if !strings.HasPrefix(info.Name, b.prefix) {
			return nil
		}
		info = b.outNS(info)
		if !filter.Match(adaptInfo(info)) {
			return nil
		}
		return fn(ctx, info)
	})
	if errdefs.IsNotFound(err) { // an empty store has no bucket yet
		return nil
	}
	return err
}

// Close does nothing: the Store owns the snapshotter.
func (b *Builders) Close() error { return nil }

// Cleanup removes the snapshotter's directories that no snapshot owns,
// when the snapshotter kind can.
func (b *Builders) Cleanup(ctx context.Context) error {
	if c, ok := b.s.sn.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}

// ShareRequest asks Share for a builder's committed snapshot holding the
// fleet's layer.
type ShareRequest struct {
	// ChainID names the fleet's committed snapshot on this node.
	ChainID digest.Digest
	// Name is the builder's name for the new committed snapshot.
	Name string
	// Parent is the builder's committed snapshot below it ("" for the
	// bottom layer); it must hold the layers below ChainID's.
	Parent string
	// Labels are the new snapshot's labels (the builder's Prepare labels).
	Labels map[string]string
}

// Share commits the builder's snapshot req.Name on req.Parent with the
// files of the fleet's snapshot req.ChainID, without unpacking anything:
// the new snapshot's directory holds hard links to the fleet's files
// (overlayfs: the layer's own diff; native: the whole tree), and fresh
// directories with the same modes, owners, times and xattrs (overlay's
// opaque markers). Committed snapshots are never written, so the builder
// and the fleet share the files; removing either leaves the other whole.
//
// Errors: ErrNotShareable; errdefs.ErrAlreadyExists when req.Name exists;
// errdefs.ErrNotFound when req.Parent does not.
func (b *Builders) Share(ctx context.Context, req ShareRequest) error {
	src, err := b.s.sn.Stat(ctx, req.ChainID.String())
	if err != nil || src.Kind != snapshots.KindCommitted || src.Labels[LabelDir] == "" {
		return fmt.Errorf("share %s: %w", req.ChainID, ErrNotShareable)
	}
	if _, err := b.s.sn.Stat(ctx, b.inNS(req.Name)); err == nil {
		return fmt.Errorf("share %s as %s: %w", req.ChainID, req.Name, errdefs.ErrAlreadyExists)
	}
	active := activePrefix + nonce() + "-share"
	mounts, err := b.s.sn.Prepare(ctx, active, b.inNS(req.Parent))
	if err != nil {
		return fmt.Errorf("share %s: %w", req.ChainID, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = b.s.sn.Remove(context.WithoutCancel(ctx), active)
		}
	}()
	dst, err := applyTarget(mounts)
	if err != nil {
		return err
	}
	// native copied the parent's tree in: the fleet's holds it already.
	entries, err := os.ReadDir(dst.root)
	if err != nil {
		return fmt.Errorf("share %s: %w", req.ChainID, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dst.root, e.Name())); err != nil {
			return fmt.Errorf("share %s: %w", req.ChainID, err)
		}
	}
	if err := linkTree(src.Labels[LabelDir], dst.root); err != nil {
		return fmt.Errorf("share %s: %w", req.ChainID, err)
	}
	labels := map[string]string{}
	for k, v := range req.Labels {
		labels[k] = v
	}
	labels[LabelShared] = req.ChainID.String()
	for _, k := range []string{LabelDiffID, LabelSize} {
		if v := src.Labels[k]; v != "" {
			labels[k] = v
		}
	}
	if err := b.s.sn.Commit(ctx, b.inNS(req.Name), active, snapshots.WithLabels(labels)); err != nil {
		return fmt.Errorf("share %s as %s: %w", req.ChainID, req.Name, err)
	}
	committed = true
	return nil
}

// adaptInfo lets containerd's filters match a snapshot's info (the fields
// containerd's own snapshotters filter on).
func adaptInfo(info snapshots.Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "kind":
			switch info.Kind {
			case snapshots.KindActive:
				return "active", true
			case snapshots.KindView:
				return "view", true
			case snapshots.KindCommitted:
				return "committed", true
			}
		case "name":
			return info.Name, true
		case "parent":
			return info.Parent, true
		case "labels":
			if len(info.Labels) == 0 {
				return "", false
			}
			v, ok := info.Labels[strings.Join(fieldpath[1:], ".")]
			return v, ok
		}
		return "", false
	})
}
