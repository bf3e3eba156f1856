package lineage_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
)

// A hit on an imported record says whether the build named the import; a
// miss names each named import that had no record for its keys, and not
// one that had.
func TestImports(t *testing.T) {
	t.Parallel()
	const a, b = "type=registry,ref=r/c:a", "type=local,src=/c"
	keys := []events.CacheKey{{Index: 0, Digest: dg("k0")}, {Index: 1, Digest: dg("k1")}}
	named := []events.CacheImported{
		{Source: a, Records: []digest.Digest{cachefmt.RecordDigest(dg("k1"), 0)}},
		{Source: b, Records: []digest.Digest{cachefmt.RecordDigest(dg("other"), 0)}},
	}
	for _, tc := range []struct {
		name  string
		named []events.CacheImported
		hit   *events.CacheRecord
		keys  []events.CacheKey
		want  []events.Difference
	}{
		{name: "hit on an unnamed import", hit: &events.CacheRecord{Import: a},
			want: []events.Difference{{Kind: events.DiffImportUnnamed, Name: a}}},
		{name: "hit on a named import", named: named, hit: &events.CacheRecord{Import: b},
			want: []events.Difference{{Kind: events.DiffImportNamed, Name: b}}},
		{name: "hit on the fleet's record", named: named, hit: &events.CacheRecord{}},
		{name: "miss", named: named, keys: keys,
			want: []events.Difference{{Kind: events.DiffImportLacked, Name: b, Old: dg("k1").String()}}},
		{name: "miss without imports", keys: keys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, lineage.Imports(tc.named, tc.hit, tc.keys)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
