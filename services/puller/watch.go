package puller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/tagwatch"
)

// eventPublisher publishes events.
type eventPublisher interface {
	Publish(ctx context.Context, e events.Event) error
}

// watcher checks the fleet's watched tags once per interval for the whole
// fleet: every replica ticks, the one that claims the round checks.
type watcher struct {
	store    *tagwatch.Store
	registry Registry
	pub      eventPublisher
	interval time.Duration
	instance string
	log      *slog.Logger
}

// run ticks until ctx is done.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := w.round(ctx, now); err != nil && context.Cause(ctx) == nil {
				w.log.Warn("tag watch round", "error", err)
			}
		}
	}
}

// round checks every watch when this replica claims the round now falls
// in, and publishes a source.changed for each move (and its pre-pull).
func (w *watcher) round(ctx context.Context, now time.Time) error {
	n := tagwatch.Round(now, w.interval)
	if err := w.store.Claim(ctx, n); errors.Is(err, tagwatch.ErrClaimed) {
		return nil
	} else if err != nil {
		return err
	}
	changes, err := w.store.Check(ctx, tagwatch.ResolverFunc(func(ctx context.Context, ref string) (digest.Digest, error) {
		d, err := w.registry.Resolve(ctx, ref)
		return d.Digest, err
	}), now)
	for _, c := range changes {
		if perr := w.publish(ctx, n, c); perr != nil {
			err = errors.Join(err, perr)
		}
	}
	return err
}

// publish says c under events.WatchBuildID and, when the watch asks for
// it, starts a build that pulls the new digest onto the snapshotters.
func (w *watcher) publish(ctx context.Context, round uint64, c events.SourceChanged) error {
	sum := sha256.Sum256([]byte(c.Ref + "\x00" + c.Platform + "\x00" + c.New))
	id := hex.EncodeToString(sum[:8])
	if c.Prepull {
		c.PrepullBuild = "prepull-" + id
		req := events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://" + c.Ref + "@" + c.New}, Snapshot: true}
		if c.Platform != "" {
			p, err := platforms.Parse(c.Platform)
			if err != nil {
				return fmt.Errorf("prepull %s: %w", c.Ref, err)
			}
			req.Source.Platform = &p
		}
		e := events.New(req)
		e.ID, e.BuildID, e.Source, e.Time = c.PrepullBuild+"-request", c.PrepullBuild, "/stevedore/puller/"+w.instance, time.Now()
		if err := w.pub.Publish(ctx, e); err != nil {
			return fmt.Errorf("prepull %s: %w", c.Ref, err)
		}
	}
	e := events.New(c)
	e.ID, e.BuildID, e.Source, e.Time = fmt.Sprintf("changed-%d-%s", round, id), events.WatchBuildID, "/stevedore/puller/"+w.instance, time.Now()
	return w.pub.Publish(ctx, e)
}

var _ eventPublisher = (*bus.Publisher)(nil)
