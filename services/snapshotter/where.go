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

// placement is which snapshotter holds a node's snapshots and the
// directory it keeps them in, as a client prints it. The zero value says
// nothing: the node is not known to be this one, or its store does not
// say.
type placement struct {
	// Snapshotter is the snapshotter kind (overlayfs, native).
	Snapshotter string `json:"snapshotter,omitempty"`
	// SnapshotsDir is its snapshots directory on that node.
	SnapshotsDir string `json:"snapshotsDir,omitempty"`
}

// placement is this node's.
func (h *Handler) placement() placement {
	ps, ok := h.store.(placedStore)
	if !ok {
		return placement{}
	}
	return placement{Snapshotter: string(ps.Kind()), SnapshotsDir: filepath.Join(ps.Root(), "snapshots", string(ps.Kind()))}
}

// placementOf is the placement of the node a snapshot record names: what
// the record carries, else this node's when it names this node, else
// nothing (a record of another node written before records carried it).
func (h *Handler) placementOf(r snapshotRecord) placement {
	switch {
	case r.Snapshotter != "":
		return r.placement
	case r.Node == h.node:
		return h.placement()
	}
	return placement{}
}

// where fills in, on each snapshot.ready of a snapshot on this node, the
// snapshotter that holds it and its directory, so a client of another
// process can say where the snapshot is.
func (h *Handler) where(out []events.Event) []events.Event {
	p := h.placement()
	if p.Snapshotter == "" {
		return out
	}
	for i, e := range out {
		r, ok := e.Data.(events.SnapshotReady)
		if !ok || r.Node != h.node {
			continue
		}
		r.Snapshotter, r.SnapshotsDir = p.Snapshotter, p.SnapshotsDir
		out[i].Data = r
	}
	return out
}
