package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	cfs "github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
)

// BuildResult is what Build did.
type BuildResult struct {
	// Key is the committed snapshot's name.
	Key string
	// Size is the size of the files in it, in bytes.
	Size int64
	// Made is set when this call made it; false when it was there.
	Made bool
}

// Build returns the committed snapshot key, without parent, making it
// from what fill writes into its directory when this node does not have it
// (the snapshot of a source that is not an image: a file, a checkout).
// fill writes straight into the snapshot's directory, which needs no
// mount. Concurrent Builds of one key on this Store make it once. On any
// failure (fill's, or ctx's end) nothing is committed.
func (s *Store) Build(ctx context.Context, key string, fill func(ctx context.Context, dir string) error, opts ...BuildOption) (BuildResult, error) {
	var o buildOptions
	for _, opt := range opts {
		opt(&o)
	}
	if key == "" {
		return BuildResult{}, errors.New("build: empty snapshot key")
	}
	if s.hasKey(ctx, key) {
		return BuildResult{Key: key, Size: s.sizeOf(ctx, key)}, nil
	}
	ran := false
	v, err, _ := s.extracts.Do(key, func() (any, error) {
		ran = true
		if s.hasKey(ctx, key) {
			return BuildResult{Key: key, Size: s.sizeOf(ctx, key)}, nil
		}
		return s.build(ctx, key, fill, o)
	})
	if err != nil {
		return BuildResult{}, err
	}
	res, _ := v.(BuildResult)
	if !ran {
		res.Made = false
	}
	return res, nil
}

func (s *Store) build(ctx context.Context, key string, fill func(ctx context.Context, dir string) error, o buildOptions) (BuildResult, error) {
	active := activePrefix + nonce() + "-" + key
	mounts, err := s.sn.Prepare(ctx, active, "")
	if err != nil {
		return BuildResult{}, fmt.Errorf("prepare snapshot %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = s.sn.Remove(context.WithoutCancel(ctx), active)
		}
	}()
	dst, err := applyTarget(mounts)
	if err != nil {
		return BuildResult{}, err
	}
	if err := fill(ctx, dst.root); err != nil {
		return BuildResult{}, err
	}
	if cause := context.Cause(ctx); cause != nil {
		return BuildResult{}, cause
	}
	size, err := dirSize(dst.root)
	if err != nil {
		return BuildResult{}, err
	}
	labels := map[string]string{LabelSize: strconv.FormatInt(size, 10), LabelDir: dst.root}
	for k, v := range o.labels {
		labels[k] = v
	}
	if err := s.sn.Commit(ctx, key, active, snapshots.WithLabels(labels)); err != nil {
		if errdefs.IsAlreadyExists(err) {
			return BuildResult{Key: key, Size: s.sizeOf(ctx, key)}, nil
		}
		return BuildResult{}, fmt.Errorf("commit snapshot %s: %w", key, err)
	}
	committed = true
	return BuildResult{Key: key, Size: size, Made: true}, nil
}

// BuildOption configures a Build.
type BuildOption func(*buildOptions)

type buildOptions struct {
	labels map[string]string
}

// WithLabels adds labels to the snapshot Build commits.
func WithLabels(labels map[string]string) BuildOption {
	return func(o *buildOptions) { o.labels = labels }
}

// LabelDir is the label, on a snapshot Build or Unpack committed, naming the
// directory holding its files. Both snapshotters keep a snapshot's directory when they commit
// it, so it stays valid until the snapshot is removed.
const LabelDir = "dev.stevedore.snapshot.dir"

// Built is a committed snapshot Build made, found by Newest.
type Built struct {
	// Key is the snapshot's name.
	Key string
	// Dir holds its files: read them, never write them.
	Dir string
}

// Newest returns the committed snapshot labelled label=value that was
// made last, among those Build made; false when there is none. The
// caller keeps prune away (the snapshotter's busy lock) while it reads
// Dir.
func (s *Store) Newest(ctx context.Context, label, value string) (Built, bool) {
	var best snapshots.Info
	found := false
	err := s.sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted || info.Labels[label] != value || info.Labels[LabelDir] == "" ||
			strings.HasPrefix(info.Name, BuilderPrefix) {
			return nil
		}
		if !found || info.Created.After(best.Created) {
			best, found = info, true
		}
		return nil
	})
	if err != nil || !found {
		return Built{}, false
	}
	return Built{Key: best.Name, Dir: best.Labels[LabelDir]}, true
}

// FilesDir returns the directory holding the files of snapshot key, one
// Build made: to read, never to write, while no prune runs.
//
// Errors: the snapshot is not here or was not made by Build.
func (s *Store) FilesDir(ctx context.Context, key string) (string, error) {
	info, err := s.sn.Stat(ctx, key)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", key, err)
	}
	dir := info.Labels[LabelDir]
	if dir == "" || info.Kind != snapshots.KindCommitted {
		return "", fmt.Errorf("snapshot %s: not a committed snapshot of files", key)
	}
	return dir, nil
}

// CopyOut copies the files of snapshot key, one Build made, into dir
// (created when missing), with their modes, owners, times and links.
//
// Errors: the snapshot is not here or was not made by Build; the copy's.
func (s *Store) CopyOut(ctx context.Context, key, dir string) error {
	src, err := s.FilesDir(ctx, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: an output directory, like a checkout
		return err
	}
	return cfs.CopyDir(dir, src)
}

func (s *Store) hasKey(ctx context.Context, key string) bool {
	info, err := s.sn.Stat(ctx, key)
	return err == nil && info.Kind == snapshots.KindCommitted
}

func (s *Store) sizeOf(ctx context.Context, key string) int64 {
	info, err := s.sn.Stat(ctx, key)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(info.Labels[LabelSize], 10, 64)
	return n
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// HasKey reports whether the committed snapshot key is on this node.
func (s *Store) HasKey(ctx context.Context, key string) bool { return s.hasKey(ctx, key) }
