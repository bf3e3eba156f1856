package puller

import (
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// topResolution is what a reference resolved to.
type topResolution struct {
	// Top is the index or manifest.
	Top ocispec.Descriptor
	// Stale, when set, says that Top is the tag's last known resolution,
	// used because the registry did not answer, and why.
	Stale string
}

// markStale says, in the outputs of index 0, that the tag's resolution is
// its last known one: a progress line of the source and the stale note on
// every key.
func markStale(vertex, ref, stale string, now time.Time, outs []events.Event) []events.Event {
	at := now
	notice := events.New(events.Progress{Vertex: vertex, ID: "resolve " + ref + ": " + stale, Action: "stale",
		Started: &at, Completed: &at})
	marked := make([]events.Event, 0, len(outs)+1)
	marked = append(marked, notice)
	for _, e := range outs {
		switch p := e.Data.(type) {
		case events.CacheKeyComputed:
			p.Key.Stale = stale
			e.Data = p
		case events.CacheHit:
			p.Key.Stale = stale
			e.Data = p
		case events.CacheMiss:
			p.Keys = staleKeys(p.Keys, stale)
			e.Data = p
		case events.CacheKeyRequested:
			p.Keys = staleKeys(p.Keys, stale)
			e.Data = p
		case events.SnapshotRequested:
			p.Keys = staleKeys(p.Keys, stale)
			e.Data = p
		}
		marked = append(marked, e)
	}
	return marked
}

func staleKeys(keys []events.CacheKey, stale string) []events.CacheKey {
	out := append([]events.CacheKey(nil), keys...)
	for i := range out {
		if out[i].Index == 0 {
			out[i].Stale = stale
		}
	}
	return out
}
