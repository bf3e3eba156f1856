package snapshotter_test

import (
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"

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
	if err == nil || !failure.Permanent(err) || !strings.Contains(err.Error(), "carries neither cacheOpts nor content") || len(out) != 0 {
		t.Errorf("Snapshot = %v, %v; want a permanent error naming what is missing", out, err)
	}
}

// Content names exactly one thing to snapshot: none or two fail for good,
// before anything is fetched.
func TestHandlerRefusesContentOfNoneOrTwoKinds(t *testing.T) {
	t.Parallel()
	h, err := snapshotter.NewHandler(snapshotter.HandlerConfig{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	keys := []events.CacheKey{{Digest: digest.FromString("a")}}
	for _, c := range []struct {
		content events.Content
		want    string
	}{
		{events.Content{}, "names nothing to snapshot"},
		{events.Content{File: &events.FileContent{Name: "f"}, Git: &events.GitContent{}}, "names 2 things to snapshot"},
	} {
		out, err := h.Snapshot(t.Context(), events.SnapshotRequested{Source: events.SourceOp{Identifier: "git://example.com/a"}, Keys: keys, Content: &c.content})
		if err == nil || !failure.Permanent(err) || !strings.Contains(err.Error(), c.want) || len(out) != 0 {
			t.Errorf("Snapshot(%+v) = %v, %v; want a permanent error saying %q", c.content, out, err, c.want)
		}
	}
}
