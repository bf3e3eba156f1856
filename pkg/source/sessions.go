package source

import (
	"slices"
	"strings"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// SessionsNamed returns the client sessions op's attributes name, sorted
// and without repeats: oci.session (oci-layout, oci-layout+blob, a git
// bundle's) and the session part of local.session ("a:b" names b). A
// scheme that ignores one of them still names it: a request is checked
// for every session it could make the fleet read.
func SessionsNamed(op events.SourceOp) []string {
	var ids []string
	if v := op.Attrs[AttrOCILayoutSessionID]; v != "" {
		ids = append(ids, v)
	}
	if v := op.Attrs[AttrLocalSessionID]; v != "" {
		if _, id, ok := strings.Cut(v, ":"); ok {
			v = id
		}
		if v != "" {
			ids = append(ids, v)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
