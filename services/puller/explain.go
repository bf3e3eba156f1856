package puller

import (
	"context"
	"strings"
	"time"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// explainMiss says what the miss of an image differs in from the nearest
// record the fleet made of the same image (pkg/lineage), and, when the
// client wants the content (a record will be made), keeps the miss's
// facts for the next one. It is best effort: a lineage that cannot be
// read gives no explanation, and one that cannot be written costs a later
// explanation, never the build. Sources that are not docker-image get
// none.
func (h *Handler) explainMiss(ctx context.Context, in events.CacheKeyRequested, opts *events.CacheOpts, keys []events.CacheKey) *events.MissExplanation {
	id, err := h.manager.Identifier(in.Source)
	if err != nil {
		return nil
	}
	img, ok := id.(*source.ImageIdentifier)
	if !ok || img.Scheme() != source.SchemeDockerImage {
		return nil
	}
	identity := lineage.Identity(img)
	seen := sighting(ctx, in, img, opts, keys, h.now())
	recent, err := h.lineage.Recent(ctx, identity)
	if err != nil {
		return nil
	}
	expl := lineage.Explain(identity, seen, recent, func(d digest.Digest) bool {
		_, found, err := h.index.Get(ctx, d)
		return err != nil || found // an index that fails says nothing pruned
	})
	if in.Snapshot {
		_ = h.lineage.Add(ctx, identity, seen)
	}
	return &expl
}

// sighting is the facts of a request's keys.
func sighting(ctx context.Context, in events.CacheKeyRequested, img *source.ImageIdentifier, opts *events.CacheOpts, keys []events.CacheKey, now time.Time) events.Sighting {
	s := events.Sighting{
		Identifier: in.Source.Identifier,
		Platform:   platforms.FormatAll(opts.Platform),
		Attrs:      lineage.Attrs(in.Source),
		SeenAt:     requestedAt(ctx, now),
	}
	if env, ok := bus.Input(ctx); ok {
		s.Build = env.BuildID
	}
	if tag, _, _ := strings.Cut(img.Reference.Object, "@"); tag != "" {
		s.Tag = img.Reference.Locator + ":" + tag
	}
	for _, k := range keys {
		s.Keys = append(s.Keys, k.Digest)
	}
	if len(keys) > 0 {
		s.Pin = keys[0].Pin
	}
	for _, l := range opts.Layers {
		s.DiffIDs = append(s.DiffIDs, l.DiffID)
	}
	return s
}
