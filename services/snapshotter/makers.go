package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// maker makes the snapshot a request asks for, of one kind of content.
type maker func(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error)

// newMakers is the snapshotter's one table of what it makes, by the kind
// of content the scheme table names (source.SchemeSpec.Content): a layer
// chain (handler.go), a file (file.go), a git checkout (git.go) or a
// client's directory (local.go). TestEveryContentKindHasAMaker fails when
// a kind of source.ContentKinds has no maker here.
func (h *Handler) newMakers() map[source.ContentKind]maker {
	return map[source.ContentKind]maker{
		source.ContentLayers: h.snapshotLayers,
		source.ContentFile: func(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
			return h.snapshotContent(ctx, in, func() (filler, error) { return h.fileFiller(in.Content.File) })
		},
		source.ContentGit: func(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
			return h.snapshotContent(ctx, in, func() (filler, error) { return h.gitFiller(in.Content.Git) })
		},
		source.ContentLocal: h.snapshotLocal,
	}
}

// makerOf returns the maker of what in asks for (source.ContentOf). A
// request that names nothing to snapshot, content of two kinds, or a kind
// this node has no maker of fails for good.
func (h *Handler) makerOf(in events.SnapshotRequested) (maker, error) {
	if in.Content != nil {
		if err := in.Content.Validate(); err != nil {
			return nil, failure.Invalid(fmt.Errorf("snapshot.requested: %w", err))
		}
	} else if in.CacheOpts == nil {
		return nil, failure.Invalid(errors.New("snapshot.requested carries neither cacheOpts nor content"))
	}
	kind := source.ContentOf(in)
	m, ok := h.makers[kind]
	if !ok {
		return nil, failure.Invalid(fmt.Errorf("snapshot.requested: no maker of %q content", kind))
	}
	return m, nil
}
