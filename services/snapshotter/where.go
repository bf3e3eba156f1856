package snapshotter

import (
	"path/filepath"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// placedStore is a Store that says which snapshotter it is and where it
// keeps its data (snapshot.Store does).
type placedStore interface {
	Kind() snapshot.Kind
	Root() string
}

// where fills in, on each snapshot.ready of a snapshot on this node, the
// snapshotter that holds it and its directory, so a client of another
// process can say where the snapshot is.
func (h *Handler) where(out []events.Event) []events.Event {
	ps, ok := h.store.(placedStore)
	if !ok {
		return out
	}
	for i, e := range out {
		r, ok := e.Data.(events.SnapshotReady)
		if !ok || r.Node != h.node {
			continue
		}
		r.Snapshotter = string(ps.Kind())
		r.SnapshotsDir = filepath.Join(ps.Root(), "snapshots", string(ps.Kind()))
		out[i].Data = r
	}
	return out
}
