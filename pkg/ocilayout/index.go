package ocilayout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Index returns the parsed index.json. A layout with no index.json yet (or
// an empty one, which BuildKit's client also reads as empty) has an empty
// index: schemaVersion 2, the OCI index media type and no manifests. The
// file is replaced only by rename, so Index takes no lock and never sees a
// half-written index from this package.
//
// Errors: ErrInvalid when index.json is not a JSON image index; the cause
// of ctx's cancellation; otherwise the file system's error.
func (l *Layout) Index(ctx context.Context) (ocispec.Index, error) {
	if err := checkContext(ctx, "read index"); err != nil {
		return ocispec.Index{}, err
	}
	return l.readIndex()
}

// readIndex is Index without ctx, for Tag, which holds the lock.
func (l *Layout) readIndex() (ocispec.Index, error) {
	data, err := readSmallFile(l.path(IndexFile), IndexFile, MaxIndexSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ocispec.Index{}, fmt.Errorf("read %s: %w", IndexFile, err)
	}
	var idx ocispec.Index
	if len(data) > 0 {
		if err := json.Unmarshal(data, &idx); err != nil {
			return ocispec.Index{}, fmt.Errorf("read %s in %s: %w: %w", IndexFile, l.root, ErrInvalid, err)
		}
	}
	setIndexDefaults(&idx)
	return idx, nil
}

// setIndexDefaults fills what BuildKit's setOCIIndexDefaults fills, and
// makes manifests an empty list rather than null.
func setIndexDefaults(idx *ocispec.Index) {
	if idx.SchemaVersion == 0 {
		idx.SchemaVersion = 2
	}
	if idx.MediaType == "" {
		idx.MediaType = ocispec.MediaTypeImageIndex
	}
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
}

// Tag adds desc to index.json tagged tag (its AnnotationRefName annotation
// set to tag, its other annotations kept), exactly as BuildKit's client
// ociindex.Put does for a tag: every older entry whose AnnotationRefName is
// tag and which has no (or an empty) AnnotationContainerdImageName is
// removed, entries of other tags and entries containerd named are kept,
// and desc is appended. It works under exclusive flocks on the layout's
// root directory (which excludes every writer using this package) and on
// LockFile (the lock BuildKit's client takes), waiting for other writers
// while ctx allows, and replaces index.json by renaming a fsynced
// temporary file over it. Tag does not check that the
// blob is stored: write blobs first, tag last. desc is not modified.
//
// Errors: ErrInvalid for an empty tag, a malformed digest or a negative
// size, or when the existing index.json cannot be parsed (it is left
// alone); the cause of ctx's cancellation (while waiting for the lock or
// before the rename, in which case index.json is unchanged); otherwise the
// file system's error.
func (l *Layout) Tag(ctx context.Context, desc ocispec.Descriptor, tag string) error {
	if tag == "" {
		return fmt.Errorf("tag %s: empty tag: %w", desc.Digest, ErrInvalid)
	}
	if err := validateDescriptor(desc); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	unlock, err := lockIndex(ctx, l.root, l.path(LockFile))
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	defer unlock()

	idx, err := l.readIndex()
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	insertTagged(&idx, desc, tag)
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	tmp, err := writeTemp(l.root, IndexFile, data, filePerm)
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	err = checkContext(ctx, "tag "+tag)
	if err == nil {
		err = commitTemp(tmp, l.path(IndexFile))
	}
	if err != nil {
		_ = os.Remove(tmp) //nolint:gosec // G703: tmp is the fresh dot-file writeTemp made in the root
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	return nil
}

// insertTagged is BuildKit's insertDesc for a tag (no image name).
func insertTagged(idx *ocispec.Index, in ocispec.Descriptor, tag string) {
	desc := in
	desc.Annotations = maps.Clone(in.Annotations)
	if desc.Annotations == nil {
		desc.Annotations = map[string]string{}
	}
	desc.Annotations[AnnotationRefName] = tag
	kept := make([]ocispec.Descriptor, 0, len(idx.Manifests)+1)
	for _, m := range idx.Manifests {
		if m.Annotations[AnnotationRefName] != tag || m.Annotations[AnnotationContainerdImageName] != "" {
			kept = append(kept, m)
		}
	}
	idx.Manifests = append(kept, desc)
}

// Resolve returns the index entry for tag, matching as BuildKit's client
// (ociindex.Get) does: entries whose AnnotationContainerdImageName equals
// tag first, then entries whose AnnotationRefName equals tag. Within the
// first kind that matches, the last entry in index order (the most
// recently added) wins. BuildKit's client takes the first instead; the two
// differ only when several entries carry the same name, which Tag never
// leaves for entries containerd did not name.
//
// Errors: ErrNotFound when no entry matches (a layout with no index.json
// has none); ErrInvalid for an empty tag or an index.json that cannot be
// parsed; the cause of ctx's cancellation; otherwise the file system's
// error.
func (l *Layout) Resolve(ctx context.Context, tag string) (ocispec.Descriptor, error) {
	if tag == "" {
		return ocispec.Descriptor{}, fmt.Errorf("resolve: empty tag: %w", ErrInvalid)
	}
	idx, err := l.Index(ctx)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w", tag, err)
	}
	if d, ok := Find(idx, tag); ok {
		return d, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("resolve %s in %s: %w", tag, l.root, ErrNotFound)
}

// Find is Resolve on an index read already (one a client session sent):
// the entry tag names, and whether there is one.
func Find(idx ocispec.Index, tag string) (ocispec.Descriptor, bool) {
	for _, key := range []string{AnnotationContainerdImageName, AnnotationRefName} {
		for i := len(idx.Manifests) - 1; i >= 0; i-- {
			if v, ok := idx.Manifests[i].Annotations[key]; ok && v == tag {
				return idx.Manifests[i], true
			}
		}
	}
	return ocispec.Descriptor{}, false
}
