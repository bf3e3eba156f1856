package snapshotter_test

import (
	"fmt"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
)

// BenchmarkRemoteSnapshotChain is a builder's remote-snapshot Prepare of
// every layer of the 3-layer fixture, BuildKit's way (bottom first, then
// Stat), under fresh names each time:
//
//   - cold: the node has nothing (the fleet's snapshots and blobs pruned
//     before each run): the build resolves the image, fetches and unpacks
//     three layers from the in-test registry, then shares them;
//   - warm: the chain is on the node already: the build resolves (a cache
//     hit) and the layers are shared.
//
// Each run names the image by a new tag, so that no run is answered from
// the previous one's memory of the chain.
func BenchmarkRemoteSnapshotChain(b *testing.B) {
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			needRoot(b, "the store extracts as root")
			f := newBuilderFleet(b, true)
			ctx := b.Context()
			idx, err := cacheindex.Open(ctx, f.Env.JS)
			if err != nil {
				b.Fatal(err)
			}
			if mode == "warm" {
				f.prepareChain(b, buildkitLabels, func(i int) string { return "warmup/" + f.chainIDs[i].String() })
			}
			n := 0
			for b.Loop() {
				b.StopTimer()
				n++
				f.ref = f.Push(b, "single", fmt.Sprintf("remote/single:%d", n))
				if mode == "cold" {
					if n > 1 {
						prev := fmt.Sprintf("run%d/", n-1)
						for i := len(f.chainIDs) - 1; i >= 0; i-- {
							if err := f.sn.Remove(ctx, prev+f.chainIDs[i].String()); err != nil {
								b.Fatal(err)
							}
						}
					}
					if _, err := f.svc.Prune(ctx, idx, 0); err != nil {
						b.Fatal(err)
					}
				}
				name := fmt.Sprintf("run%d/", n)
				b.StartTimer()
				f.prepareChain(b, buildkitLabels, func(i int) string { return name + f.chainIDs[i].String() })
			}
		})
	}
}
