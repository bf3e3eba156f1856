package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lease"
)

// filler writes the files of a content snapshot into dir.
type filler func(ctx context.Context, dir string) error

// snapshotContent makes the snapshot of a source that is not an image
// (Content), once for the fleet like a layer chain: the node that takes
// the key's lease builds it with the filler fillerOf returns (one per kind
// of content: file.go, git.go), the others follow. It is recorded in the
// cache index under every key, with this node and the snapshot's name.
func (h *Handler) snapshotContent(ctx context.Context, in events.SnapshotRequested, fillerOf func() (filler, error)) ([]events.Event, error) {
	key := in.Content.Key(in.Keys)
	if key == "" {
		return nil, failure.Invalid(errors.New("snapshot.requested for content carries no key"))
	}
	fill, err := fillerOf()
	if err != nil {
		return nil, err
	}
	ready := events.SnapshotReady{Source: in.Source, Keys: in.Keys, SnapshotKey: key, Node: h.node}
	rec := snapshotRecord{Node: h.node}
	if h.hasContent(ctx, key) {
		ready.Reused = 1
	} else {
		accept := func(v []byte) bool {
			var r snapshotRecord
			if json.Unmarshal(v, &r) != nil {
				return false
			}
			return r.Node != h.node || h.hasContent(ctx, key)
		}
		out, err := h.flight.Do(ctx, "snapshot."+key, accept, func(ctx context.Context) ([]byte, error) {
			h.busy.RLock()
			defer h.busy.RUnlock()
			res, err := h.store.Build(ctx, key, fill)
			if err != nil {
				return nil, err
			}
			if res.Made {
				ready.Fetched = 1
			}
			return json.Marshal(snapshotRecord{Node: h.node, Size: res.Size, CreatedAt: h.now().UTC(), placement: h.placement()})
		})
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(out.Value, &rec); err != nil {
			return nil, fmt.Errorf("stored snapshot record of %s: %w", key, err)
		}
		ready.Node, ready.Size, ready.Followed = rec.Node, rec.Size, out.Outcome == lease.Followed
	}
	where := h.placementOf(rec)
	ready.Snapshotter, ready.SnapshotsDir = where.Snapshotter, where.SnapshotsDir
	err = h.record(ctx, in.Keys, events.CacheRecord{Node: ready.Node, SnapshotKey: key, Size: ready.Size,
		Snapshotter: where.Snapshotter, SnapshotsDir: where.SnapshotsDir})
	if err != nil {
		return nil, err
	}
	return []events.Event{events.New(ready)}, nil
}

func (h *Handler) hasContent(ctx context.Context, key string) bool {
	h.busy.RLock()
	defer h.busy.RUnlock()
	return h.store.HasKey(ctx, key)
}

// record stores rec in the cache index under every key's digest.
func (h *Handler) record(ctx context.Context, keys []events.CacheKey, rec events.CacheRecord) error {
	for _, k := range keys {
		rec.Digests = append(rec.Digests, k.Digest)
	}
	if len(rec.Digests) == 0 {
		return nil
	}
	rec.CreatedAt = h.now().UTC()
	if err := h.index.Put(ctx, rec); err != nil {
		return failure.Unavailable(err)
	}
	return nil
}
