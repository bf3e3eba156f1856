package puller

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// scheme is an identifier of a scheme and nothing else: what the manager
// routes by.
type scheme string

func (s scheme) Scheme() string { return string(s) }
func (s scheme) String() string { return string(s) + "://" }

// The handler as the service makes it (with http and sessions) has a key
// function for every scheme the scheme table routes to the puller: a
// scheme that lacks one fails here, not at run time with "no handler".
func TestEverySchemeRoutedHereHasAKeyFunction(t *testing.T) {
	t.Parallel()
	h, err := NewHandler(nil, nil, nil, ocispec.Platform{}, WithHTTP(struct{ Flight }{}), WithSessions(struct{ Sessions }{}))
	if err != nil {
		t.Fatal(err)
	}
	routed := 0
	for _, s := range source.SchemeTable() {
		if s.Route != events.ComponentPuller {
			continue
		}
		routed++
		if _, err := h.manager.Resolve(scheme(s.Name)); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
	if routed == 0 {
		t.Error("the scheme table routes nothing to the puller")
	}
}
