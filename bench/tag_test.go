package bench

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

// BenchmarkTagResolve is the warm path of a tag (not a digest): today's,
// where the registry is asked on every request (max age 0), next to the
// fleet's memory answering inside the puller's tag max age. The registry
// answers at once (local) or after 20ms (a registry across a network).
func BenchmarkTagResolve(b *testing.B) {
	for _, latency := range []time.Duration{0, 20 * time.Millisecond} {
		for _, maxAge := range []time.Duration{0, time.Hour} {
			name := "registry=" + latency.String() + "/max-age=" + maxAge.String()
			b.Run(name, func(b *testing.B) {
				warmPath(b, startTagFleet(b, latency, maxAge))
			})
		}
	}
}

// startTagFleet is a resolver and one puller over TCP, with a tag
// reference to resolve from a registry that answers after latency.
func startTagFleet(b *testing.B, latency, maxAge time.Duration) *fleet {
	b.Helper()
	env := bustest.Start(b, bus.Topology{})
	var opts []registrytest.Option
	if latency > 0 {
		opts = append(opts, registrytest.WithLatency(latency))
	}
	reg := registrytest.New(b, opts...)
	reg.PushLayout(b, filepath.Join("..", "testdata", "images", "single"), "bench/tag:1")
	f := &fleet{env: env, ref: "docker-image://" + reg.Host() + "/bench/tag:1"}
	f.nc, f.js = f.connect(b, tcp, "client")
	ctx, cancel := context.WithCancelCause(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(errors.New("bench over")); wg.Wait() })
	run := func(fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil {
				b.Error(err)
			}
		})
	}
	_, rjs := f.connect(b, tcp, "resolver")
	r, err := resolver.New(rjs, resolver.Config{Replica: service.Replica{Instance: "bench", Logger: quiet}, Platform: amd64})
	if err != nil {
		b.Fatal(err)
	}
	run(r.Run)
	_, pjs := f.connect(b, tcp, "puller")
	p, err := puller.New(pjs, puller.Config{Replica: service.Replica{Instance: "bench", Logger: quiet}, Platform: amd64, TagMaxAge: maxAge,
		Registry: registry.Config{DockerConfigDir: b.TempDir()}})
	if err != nil {
		b.Fatal(err)
	}
	run(p.Run)
	f.warm(b)
	return f
}
