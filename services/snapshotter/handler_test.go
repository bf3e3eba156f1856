package snapshotter_test

import (
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// The handler is made without a fleet; a request that names neither
// layers nor content fails for good, before anything is fetched.
func TestHandlerAlone(t *testing.T) {
	t.Parallel()
	h, err := snapshotter.NewHandler(snapshotter.HandlerConfig{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.Snapshot(t.Context(), events.SnapshotRequested{Source: events.SourceOp{Identifier: "docker-image://example.com/a:1"}})
	if err == nil || !bus.Permanent(err) || !strings.Contains(err.Error(), "carries neither cacheOpts nor content") || len(out) != 0 {
		t.Errorf("Snapshot = %v, %v; want a permanent error naming what is missing", out, err)
	}
}
