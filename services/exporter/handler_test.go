package exporter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/services/exporter"
)

// The handler works without a fleet: a cache index on an embedded server
// and a registry client are all it needs. A target BuildKit does not know
// and keys the index lacks fail for good, with BuildKit's words.
func TestHandlerAlone(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	index, err := cacheindex.Open(t.Context(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	reg := registrytest.New(t)
	client, err := registry.New(registry.Config{DockerConfigDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := exporter.NewHandler(exporter.HandlerConfig{
		Index:      index,
		Registries: func(string) (exporter.Registry, error) { return client, nil },
		Builds: exporter.BuildsFunc(func(ctx context.Context, buildID string) ([]events.Event, error) {
			return bus.Replay(ctx, env.JS, buildID)
		}),
	})
	for _, tc := range []struct {
		name string
		in   events.CacheExportRequested
		want string
	}{
		{"unknown type", events.CacheExportRequested{Target: "type=gha,scope=x"}, `unknown cache exporter: "gha"`},
		{"unknown key", events.CacheExportRequested{Target: "type=registry,ref=" + reg.Host() + "/cache/app:1", Keys: []digest.Digest{digest.FromString("nope")}}, "is not in the cache index"},
	} {
		out, err := h.Export(t.Context(), tc.in)
		if err == nil || !failure.Permanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Export = %v, %v; want a permanent error saying %q", tc.name, out, err, tc.want)
		}
	}
}
