package lineage

import (
	"slices"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Imports says what the cache imports a build named (its cache.imported
// events, in order) have to do with one of its results: for a hit on a
// record that came from an import (hit), whether the build named that
// import; for a miss (hit nil), each named import that had no record for
// any of the keys. Imports serve every build, so a hit can rely on an
// import another build made; this only says so. The facts are all in the
// build's events, so a watcher computes the same.
func Imports(named []events.CacheImported, hit *events.CacheRecord, keys []events.CacheKey) []events.Difference {
	if hit != nil {
		if hit.Import == "" {
			return nil
		}
		kind := events.DiffImportUnnamed
		if slices.ContainsFunc(named, func(im events.CacheImported) bool { return im.Source == hit.Import }) {
			kind = events.DiffImportNamed
		}
		return []events.Difference{{Kind: kind, Name: hit.Import}}
	}
	if len(keys) == 0 {
		return nil
	}
	var out []events.Difference
	for _, im := range named {
		lacked := true
		for _, k := range keys {
			if slices.Contains(im.Records, cachefmt.RecordDigest(k.Digest, 0)) {
				lacked = false
				break
			}
		}
		if lacked {
			out = append(out, events.Difference{Kind: events.DiffImportLacked, Name: im.Source, Old: keys[len(keys)-1].Digest.String()})
		}
	}
	return out
}
