package source_test

import (
	"slices"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Every scheme BuildKit registers is in the table, with each piece: a
// parser, a route to a component the catalog gives cachekey.requested, and
// a kind of content the snapshotter makes.
func TestSchemeTableIsComplete(t *testing.T) {
	t.Parallel()
	want := []string{source.SchemeDockerImage, source.SchemeDockerImageBlob, source.SchemeGit, source.SchemeHTTP,
		source.SchemeHTTPS, source.SchemeLocal, source.SchemeOCILayout, source.SchemeOCILayoutBlob}
	slices.Sort(want)
	if got := source.Schemes(); !slices.Equal(got, want) {
		t.Errorf("Schemes() = %v, want %v", got, want)
	}
	for _, s := range source.SchemeTable() {
		if !s.Parses() {
			t.Errorf("%s: no parser", s.Name)
		}
		if !slices.Contains(events.ConsumedBy(s.Route), events.TypeCacheKeyRequested) {
			t.Errorf("%s: routed to %q, which the catalog does not give cachekey.requested", s.Name, s.Route)
		}
		if !slices.Contains(source.ContentKinds, s.Content) {
			t.Errorf("%s: content %q is not one of %v", s.Name, s.Content, source.ContentKinds)
		}
		if got, ok := source.Scheme(s.Name); !ok || got.Name != s.Name {
			t.Errorf("Scheme(%s) = %v, %v", s.Name, got.Name, ok)
		}
	}
}
