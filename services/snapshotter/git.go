package snapshotter

import (
	"errors"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// gitFiller checks out a commit into a snapshot.
func (h *Handler) gitFiller(*events.GitContent) (filler, error) {
	return nil, bus.Invalid(errors.New("git snapshots are not supported yet"))
}
