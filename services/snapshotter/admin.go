package snapshotter

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// servePrune answers every events.PruneRequest on events.SubjectPrune by
// pruning this node, until the returned stop is called.
func (s *Service) servePrune(ctx context.Context, index *cacheindex.Index) (stop func(), err error) {
	sub, err := s.js.Conn().Subscribe(events.SubjectPrune, func(m *nats.Msg) {
		reply := events.PruneReply{Node: s.cfg.Node}
		var req events.PruneRequest
		keepFor, err := time.Duration(0), json.Unmarshal(m.Data, &req)
		if err == nil {
			keepFor, err = time.ParseDuration(req.KeepFor)
		}
		if err == nil && keepFor < 0 {
			err = fmt.Errorf("negative keep-for %s", keepFor)
		}
		if err == nil {
			res, perr := s.Prune(ctx, index, keepFor)
			reply.Snapshots, reply.Blobs, reply.Bytes, err = res.Snapshots, res.Blobs, res.Bytes, perr
		}
		if err != nil {
			reply.Error = err.Error()
			s.cfg.Logger.Warn("prune request failed", "error", reply.Error)
		}
		data, merr := json.Marshal(reply)
		if merr != nil {
			return
		}
		if rerr := m.Respond(data); rerr != nil {
			s.cfg.Logger.Warn("prune reply failed", "error", rerr.Error())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("snapshotter: serve %s: %w", events.SubjectPrune, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
