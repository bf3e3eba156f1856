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

// sighted is what the miss of a source is explained with: the identity
// the fleet keeps its sightings under (pkg/lineage) and the facts of this
// request that only its scheme knows (tag, pin, platform, layers, http
// validators). The rest (build, time, attributes, keys) explain fills in.
type sighted struct {
	identity string
	seen     events.Sighting
	// private says the facts were learnt with the build's credentials:
	// they explain its miss but are not kept, so that no build without
	// them learns what only they may read (as with git listings and
	// http answers).
	private bool
}

// explainMiss says what the miss of an image differs in from the nearest
// record the fleet made of the same image. Sources that are not
// docker-image (oci-layout) get none.
func (h *Handler) explainMiss(ctx context.Context, in events.CacheKeyRequested, opts *events.CacheOpts, keys []events.CacheKey) *events.MissExplanation {
	id, err := h.manager.Identifier(in.Source)
	if err != nil {
		return nil
	}
	img, ok := id.(*source.ImageIdentifier)
	if !ok || img.Scheme() != source.SchemeDockerImage {
		return nil
	}
	s := sighted{identity: lineage.Identity(img), seen: events.Sighting{Platform: platforms.FormatAll(opts.Platform)}}
	if tag, _, _ := strings.Cut(img.Reference.Object, "@"); tag != "" {
		s.seen.Tag = img.Reference.Locator + ":" + tag
	}
	for _, l := range opts.Layers {
		s.seen.DiffIDs = append(s.seen.DiffIDs, l.DiffID)
	}
	return h.explain(ctx, in, s, keys)
}

// explain says what a miss differs in from the nearest record the fleet
// made of the same source (pkg/lineage), and, when the client wants the
// content (a record will be made), keeps the miss's facts for the next
// one, unless they are private. It is best effort: a lineage that cannot be read gives no
// explanation, and one that cannot be written costs a later explanation,
// never the build.
func (h *Handler) explain(ctx context.Context, in events.CacheKeyRequested, s sighted, keys []events.CacheKey) *events.MissExplanation {
	seen := s.seen
	seen.Identifier = in.Source.Identifier
	seen.Attrs = lineage.Attrs(in.Source)
	seen.SeenAt = requestedAt(ctx, h.now())
	if env, ok := bus.Input(ctx); ok {
		seen.Build = env.BuildID
	}
	for _, k := range keys {
		seen.Keys = append(seen.Keys, k.Digest)
	}
	if len(keys) > 0 {
		seen.Pin = keys[0].Pin
	}
	recent, err := h.lineage.Recent(ctx, s.identity)
	if err != nil {
		return nil
	}
	expl := lineage.Explain(s.identity, seen, recent, func(d digest.Digest) bool {
		_, found, err := h.index.Get(ctx, d)
		return err != nil || found // an index that fails says nothing pruned
	})
	if in.Snapshot && !s.private {
		_ = h.lineage.Add(ctx, s.identity, seen)
	}
	return &expl
}

// sessionScoped is the explanation of every local source's miss: its key
// names its client session and is never looked up (BuildKit's), so
// there is no record to compare with.
func sessionScoped(identifier, session string) *events.MissExplanation {
	return &events.MissExplanation{Source: identifier,
		Differences: []events.Difference{{Kind: events.DiffSessionScoped, Name: session}}}
}

// requestedAt is when the request being handled was made: its envelope's
// time, or now.
func requestedAt(ctx context.Context, now time.Time) time.Time {
	if env, ok := bus.Input(ctx); ok && !env.Time.IsZero() {
		return env.Time
	}
	return now
}
