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

// Every kind of content a scheme can name is what some snapshot.requested
// says it carries (source.ContentOf): cacheOpts for layers, else the one
// field of events.Content of that name.
func TestContentKindsAreWhatRequestsCarry(t *testing.T) {
	t.Parallel()
	carries := map[source.ContentKind]events.SnapshotRequested{
		source.ContentLayers: {CacheOpts: &events.CacheOpts{}},
		source.ContentFile:   {Content: &events.Content{File: &events.FileContent{}}},
		source.ContentGit:    {Content: &events.Content{Git: &events.GitContent{}}},
		source.ContentLocal:  {Content: &events.Content{Local: &events.LocalContent{}}},
	}
	for _, k := range source.ContentKinds {
		r, ok := carries[k]
		if !ok {
			t.Errorf("%s: no snapshot.requested carries it (a field of events.Content, named by its Kind)", k)
			continue
		}
		if got := source.ContentOf(r); got != k {
			t.Errorf("ContentOf(%+v) = %q, want %q", r, got, k)
		}
	}
	for _, r := range []events.SnapshotRequested{
		{},
		{Content: &events.Content{}},
		{Content: &events.Content{File: &events.FileContent{}, Git: &events.GitContent{}}},
	} {
		if got := source.ContentOf(r); got != "" {
			t.Errorf("ContentOf(%+v) = %q, want none", r, got)
		}
	}
	// Content wins over cacheOpts, as the snapshotter reads it.
	both := events.SnapshotRequested{CacheOpts: &events.CacheOpts{}, Content: &events.Content{Git: &events.GitContent{}}}
	if got := source.ContentOf(both); got != source.ContentGit {
		t.Errorf("ContentOf(cacheOpts and git content) = %q, want %q", got, source.ContentGit)
	}
}
