package puller

import (
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// checkContent is the guard of the content step: every snapshot.requested
// a key function of scheme sends asks for the kind of content the scheme
// table says the scheme's snapshot is made of (source.SchemeSpec.Content,
// as source.ContentOf reads a request). A key function that sends another
// kind fails for good here, rather than a snapshotter making what the
// table does not name.
func checkContent(scheme string, out []events.Event) error {
	spec, ok := source.Scheme(scheme)
	if !ok {
		return failure.Invalid(fmt.Errorf("%s is not in the scheme table", scheme))
	}
	for _, e := range out {
		r, ok := e.Data.(events.SnapshotRequested)
		if !ok {
			continue
		}
		if got := source.ContentOf(r); got != spec.Content {
			return failure.Invalid(fmt.Errorf("%s: snapshot.requested asks for %q content, the scheme table says %q", scheme, got, spec.Content))
		}
	}
	return nil
}
