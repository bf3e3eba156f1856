package snapshotter

import (
	"slices"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/source"
)

// The handler has a maker for every kind of content the scheme table can
// name, and for no other: a kind added to source.ContentKinds without one
// fails here, not at run time with "no maker".
func TestEveryContentKindHasAMaker(t *testing.T) {
	t.Parallel()
	h, err := NewHandler(HandlerConfig{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range source.ContentKinds {
		if h.makers[k] == nil {
			t.Errorf("no maker of %q content", k)
		}
	}
	for k := range h.makers {
		if !slices.Contains(source.ContentKinds, k) {
			t.Errorf("a maker of %q content, which is not one of %v", k, source.ContentKinds)
		}
	}
	for _, s := range source.SchemeTable() {
		if h.makers[s.Content] == nil {
			t.Errorf("%s: no maker of its %q content", s.Name, s.Content)
		}
	}
}
