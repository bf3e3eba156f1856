package snapshotter

import (
	"context"
	"fmt"
	"io"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/rootfs"
)

// allowRootfs grants the root filesystem of a snapshot of this node to a
// build whose own events answered with it: a cache.hit whose record, or a
// snapshot.ready that, names the snapshot on this node. Those events come
// from the puller and the snapshotter only (clients publish requests), so
// a client gets the bytes of what its own build was answered, and nothing
// else: a snapshot made with credentials is not given to a build without
// them.
func (s *Service) allowRootfs(ctx context.Context, req rootfs.Request) error {
	evs, err := bus.Replay(ctx, s.js, req.Build)
	if err != nil {
		return fmt.Errorf("build %s: %w", req.Build, err)
	}
	for _, e := range evs {
		switch d := e.Data.(type) {
		case events.CacheHit:
			if d.Record.Node == s.cfg.Node && d.Record.SnapshotKey == req.SnapshotKey {
				return nil
			}
		case events.SnapshotReady:
			if d.Node == s.cfg.Node && d.SnapshotKey == req.SnapshotKey {
				return nil
			}
		}
	}
	return fmt.Errorf("build %s was not answered with snapshot %s of node %s", req.Build, req.SnapshotKey, s.cfg.Node)
}

// writeRootfs streams a snapshot's root filesystem, prune kept away.
func (s *Service) writeRootfs(ctx context.Context, key string, w io.Writer) error {
	s.busy.RLock()
	defer s.busy.RUnlock()
	return s.store.WriteTar(ctx, key, w)
}
