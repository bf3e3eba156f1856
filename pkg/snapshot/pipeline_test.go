//go:build linux

package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// smallLayers returns n one-file layers, compressed in turn with gzip,
// zstd and not at all, and the same tars compressed otherwise.
func smallLayers(t *testing.T, n int, tag string) (layers, recompressed []layer) {
	t.Helper()
	comps := []compression{gzipped, zstdded, unpacked}
	for i := range n {
		tb := tarOf(t, dir("l", 0o755), file(fmt.Sprintf("l/%s-%d", tag, i), fmt.Sprintf("layer %d of %s", i, tag), 0o644))
		layers = append(layers, layerFromTar(t, comps[i%3], tb))
		recompressed = append(recompressed, layerFromTar(t, comps[(i+1)%3], tb))
	}
	return layers, recompressed
}

func TestUnpackDedupe(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			a, aRecompressed := smallLayers(t, 3, "a")
			extra, _ := smallLayers(t, 1, "b")
			b := append(slices.Clone(a[:2]), extra[0])
			ctx := t.Context()

			first := newSource(a...)
			res, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(a...), Source: first})
			if err != nil {
				t.Fatalf("first Unpack: %v", err)
			}
			if res.Extracted != 3 || res.Reused != 0 || len(res.Fetched) != 3 || res.Unpacked != res.Size || res.Size == 0 {
				t.Errorf("first Unpack = %+v, want 3 fetched and extracted, all of Size unpacked", res)
			}

			// The same chain again: nothing to fetch or extract.
			again := newSource(a...)
			res2, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(a...), Source: again})
			if err != nil {
				t.Fatalf("second Unpack: %v", err)
			}
			want := snapshot.Result{ChainID: res.ChainID, Key: res.Key, Size: res.Size, Reused: 3}
			if diff := cmp.Diff(want, res2); diff != "" {
				t.Errorf("second Unpack (-want +got):\n%s", diff)
			}
			if got := again.opened(); len(got) != 0 {
				t.Errorf("second Unpack opened %v", got)
			}

			// The same layers compressed otherwise: same chainID, reused.
			other := newSource(aRecompressed...)
			res3, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(aRecompressed...), Source: other})
			if err != nil {
				t.Fatalf("recompressed Unpack: %v", err)
			}
			if diff := cmp.Diff(want, res3); diff != "" {
				t.Errorf("recompressed Unpack (-want +got):\n%s", diff)
			}
			if got := other.opened(); len(got) != 0 {
				t.Errorf("recompressed Unpack opened %v", got)
			}

			// A chain sharing two layers: only the third is fetched.
			shared := newSource(b...)
			res4, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(b...), Source: shared})
			if err != nil {
				t.Fatalf("sharing Unpack: %v", err)
			}
			if res4.Reused != 2 || res4.Extracted != 1 || !slices.Equal(res4.Fetched, []digest.Digest{extra[0].Blob.Digest}) {
				t.Errorf("sharing Unpack = %+v, want 2 reused and %s fetched", res4, extra[0].Blob.Digest)
			}
			if diff := cmp.Diff(map[digest.Digest]int{extra[0].Blob.Digest: 1}, shared.opened()); diff != "" {
				t.Errorf("sharing Unpack opens (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(readTree(t, reference(t, b...)), viewTree(t, s, res4.Key)); diff != "" {
				t.Errorf("sharing snapshot (-want +got):\n%s", diff)
			}

		})
	}
}

// TestUnpackBlobInStoreNotFetched: a blob already in the content store is
// extracted from there.
func TestUnpackBlobInStoreNotFetched(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			ls, _ := smallLayers(t, 2, "stored")
			for _, l := range ls {
				w, err := s.Content().Writer(t.Context(), content.WithRef("seed-"+l.Blob.Digest.String()))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write(l.blob); err != nil {
					t.Fatal(err)
				}
				if err := w.Commit(t.Context(), l.Blob.Size, l.Blob.Digest); err != nil {
					t.Fatal(err)
				}
				_ = w.Close()
			}
			src := newSource(ls...)
			res, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(ls...), Source: src})
			if err != nil {
				t.Fatal(err)
			}
			if res.Extracted != 2 || len(res.Fetched) != 0 {
				t.Errorf("Unpack = %+v, want 2 extracted and nothing fetched", res)
			}
			if got := src.opened(); len(got) != 0 {
				t.Errorf("opened %v", got)
			}
			if diff := cmp.Diff(readTree(t, reference(t, ls...)), viewTree(t, s, res.Key)); diff != "" {
				t.Errorf("snapshot (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUnpackConcurrent: ten Unpacks of one chain at once all succeed, each
// blob is downloaded once and each layer extracted once.
func TestUnpackConcurrent(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			ls, _ := smallLayers(t, 4, "concurrent")
			src := newSource(ls...)
			const n = 10
			results := make([]snapshot.Result, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					results[i], errs[i] = s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(ls...), Source: src, Window: 1 + i%3})
				})
			}
			wg.Wait()
			fetched, extracted := map[digest.Digest]int{}, 0
			for i := range n {
				if errs[i] != nil {
					t.Errorf("Unpack %d: %v", i, errs[i])
					continue
				}
				if results[i].Key != results[0].Key {
					t.Errorf("Unpack %d key %s, want %s", i, results[i].Key, results[0].Key)
				}
				for _, d := range results[i].Fetched {
					fetched[d]++
				}
				extracted += results[i].Extracted
			}
			want := map[digest.Digest]int{}
			for _, l := range ls {
				want[l.Blob.Digest] = 1
			}
			if diff := cmp.Diff(want, src.opened()); diff != "" {
				t.Errorf("source opens (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, fetched); diff != "" {
				t.Errorf("blobs reported fetched across all results (-want +got):\n%s", diff)
			}
			if extracted != len(ls) {
				t.Errorf("layers reported extracted across all results = %d, want %d", extracted, len(ls))
			}
			if diff := cmp.Diff(readTree(t, reference(t, ls...)), viewTree(t, s, results[0].Key)); diff != "" {
				t.Errorf("snapshot (-want +got):\n%s", diff)
			}
			if _, other := snapshotNames(t, s); len(other) != 0 {
				t.Errorf("active snapshots left: %v", other)
			}
		})
	}
}

// TestUnpackWindowAndOrder holds every body until the test releases it:
// blobs are opened in layer order, never more than Window at once, and the
// bottom layer is extracted while later ones are still downloading.
func TestUnpackWindowAndOrder(t *testing.T) {
	t.Parallel()
	const timeout = 10 * time.Second
	for _, kind := range kinds {
		for _, window := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/window%d", kind, window), func(t *testing.T) {
				t.Parallel()
				needKind(t, kind)
				s := openStore(t, kind)
				ls, _ := smallLayers(t, 8, "window")
				index := map[digest.Digest]int{}
				gates := map[digest.Digest]chan struct{}{}
				for i, l := range ls {
					index[l.Blob.Digest] = i
					gates[l.Blob.Digest] = make(chan struct{})
				}
				opened := make(chan int, len(ls))
				src := newSource(ls...)
				src.body = func(ctx context.Context, d digest.Digest, data []byte) (io.Reader, error) {
					opened <- index[d]
					return &gatedReader{ctx: ctx, gate: gates[d], r: bytes.NewReader(data)}, nil
				}
				extracted := make(chan int, len(ls))
				var mu sync.Mutex
				var updates []snapshot.Update
				progress := func(u snapshot.Update) {
					mu.Lock()
					updates = append(updates, u)
					mu.Unlock()
					if u.Phase == snapshot.Extracting && u.Done {
						extracted <- index[u.Layer]
					}
				}

				type outcome struct {
					res snapshot.Result
					err error
				}
				done := make(chan outcome, 1)
				go func() {
					res, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(ls...), Source: src, Window: window, Progress: progress})
					done <- outcome{res, err}
				}()
				released := map[int]bool{}
				release := func(i int) {
					released[i] = true
					close(gates[ls[i].Blob.Digest])
				}
				t.Cleanup(func() { // unblock whatever a failed check left waiting
					for i := range ls {
						if !released[i] {
							release(i)
						}
					}
				})
				waitOpen := func(want int) {
					t.Helper()
					select {
					case got := <-opened:
						if got != want {
							t.Fatalf("opened layer %d, want layer %d next", got, want)
						}
					case <-time.After(timeout):
						t.Fatalf("layer %d was never opened (opened so far: %v)", want, src.openOrder())
					}
				}

				// The first window of downloads opens, in order.
				for i := range window {
					waitOpen(i)
				}
				// Layer 0 is extracted while the rest of the window is
				// still downloading (their bodies are held).
				release(0)
				select {
				case got := <-extracted:
					if got != 0 {
						t.Fatalf("extracted layer %d first", got)
					}
				case <-time.After(timeout):
					t.Fatal("layer 0 was not extracted while later layers downloaded")
				}
				for i := 1; i < window; i++ {
					if !src.isOpen(ls[i].Blob.Digest) {
						t.Errorf("layer %d stopped downloading before it was released", i)
					}
				}
				// Release the others in order, each once it is opened.
				for i := window; i < len(ls); i++ {
					waitOpen(i)
					release(i - window + 1)
				}
				for i := len(ls) - window + 1; i < len(ls); i++ {
					release(i)
				}
				var out outcome
				select {
				case out = <-done:
				case <-time.After(timeout):
					t.Fatal("Unpack did not finish")
				}
				if out.err != nil {
					t.Fatalf("Unpack: %v", out.err)
				}
				if out.res.Extracted != len(ls) || len(out.res.Fetched) != len(ls) {
					t.Errorf("Unpack = %+v, want all %d fetched and extracted", out.res, len(ls))
				}
				var want []digest.Digest
				for _, l := range ls {
					want = append(want, l.Blob.Digest)
				}
				if diff := cmp.Diff(want, src.openOrder()); diff != "" {
					t.Errorf("open order (-want +got):\n%s", diff)
				}
				if _, peak := src.openNow(); peak != window {
					t.Errorf("at most %d bodies were open at once, want exactly the window %d", peak, window)
				}
				close(extracted)
				var order []int
				for i := range extracted {
					order = append(order, i)
				}
				if !slices.IsSorted(order) || len(order) != len(ls)-1 {
					t.Errorf("extraction order after layer 0 = %v, want layers 1 to %d in order", order, len(ls)-1)
				}
				if diff := cmp.Diff(readTree(t, reference(t, ls...)), viewTree(t, s, out.res.Key)); diff != "" {
					t.Errorf("snapshot (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestUnpackProgress: each fetched layer's downloading updates grow to its
// size and end with one Done; each extracted layer has a start and a done.
func TestUnpackProgress(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindOverlay)
	s := openStore(t, snapshot.KindOverlay)
	// Incompressible content, so the middle layer is several reports long.
	big := make([]byte, 700<<10)
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	ls := []layer{
		buildLayer(t, gzipped, file("small", "s", 0o644)),
		buildLayer(t, zstdded, file("big", string(big), 0o644)),
		buildLayer(t, unpacked, file("plain", "p", 0o644)),
	}
	var mu sync.Mutex
	var updates []snapshot.Update
	progress := func(u snapshot.Update) {
		mu.Lock()
		defer mu.Unlock()
		updates = append(updates, u)
	}
	collect := func() map[digest.Digest][]snapshot.Update {
		mu.Lock()
		defer mu.Unlock()
		out := map[digest.Digest][]snapshot.Update{}
		for _, u := range updates {
			out[u.Layer] = append(out[u.Layer], u)
		}
		updates = nil
		return out
	}
	start := time.Now()
	if _, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(ls...), Source: newSource(ls...), Progress: progress}); err != nil {
		t.Fatal(err)
	}
	byLayer := collect()
	for i, l := range ls {
		var down, extract []snapshot.Update
		for _, u := range byLayer[l.Blob.Digest] {
			if u.Started.Before(start) {
				t.Errorf("layer %d: update started %v, before Unpack", i, u.Started)
			}
			if u.Phase == snapshot.Downloading {
				down = append(down, u)
			} else {
				extract = append(extract, u)
			}
		}
		if len(down) == 0 {
			t.Fatalf("layer %d: no downloading updates", i)
		}
		last := down[len(down)-1]
		if !last.Done || last.Current != l.Blob.Size || last.Total != l.Blob.Size {
			t.Errorf("layer %d: last downloading update %+v, want Done with %d of %d", i, last, l.Blob.Size, l.Blob.Size)
		}
		for j, u := range down[:len(down)-1] {
			if u.Done || u.Total != l.Blob.Size || u.Current > u.Total || (j > 0 && u.Current < down[j-1].Current) {
				t.Errorf("layer %d: downloading update %d = %+v", i, j, u)
			}
		}
		if i == 1 && len(down) < 3 {
			t.Errorf("layer of %d bytes had %d downloading updates, want some before the end", l.Blob.Size, len(down))
		}
		if len(extract) != 2 || extract[0].Done || !extract[1].Done || !extract[0].Started.Equal(extract[1].Started) {
			t.Errorf("layer %d: extracting updates %+v, want a start and a done", i, extract)
		}
	}

	// Nothing to do: no updates.
	if _, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(ls...), Source: newSource(ls...), Progress: progress}); err != nil {
		t.Fatal(err)
	}
	if got := collect(); len(got) != 0 {
		t.Errorf("a reused chain reported progress: %v", got)
	}
}

// TestUnpackOverlayLayersAtOnce: on overlayfs a layer is extracted while
// the one below it still is (each into its own directory, committed on its
// parent afterwards, as containerd's parallel unpack does). The bottom
// layer's body is held back until the second layer's extraction has
// started: extracting one layer after the other never gets there.
func TestUnpackOverlayLayersAtOnce(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindOverlay)
	s := openStore(t, snapshot.KindOverlay)
	ls := threeLayers(t)
	chain := snapshot.ChainIDs(eventsOf(ls...))
	ctx, cancel := context.WithTimeoutCause(t.Context(), 30*time.Second, errors.New("the layers were extracted one after the other"))
	defer cancel()
	gate := make(chan struct{})
	var once sync.Once
	src := newSource(ls...)
	src.body = onlyFor(ls[0].Blob.Digest, nil, func(data []byte) (io.Reader, error) {
		return &gatedReader{ctx: ctx, gate: gate, r: bytes.NewReader(data)}, nil
	})
	progress := func(u snapshot.Update) {
		if u.Layer == ls[1].Blob.Digest && u.Phase == snapshot.Extracting && !u.Done {
			once.Do(func() { close(gate) })
		}
	}
	if _, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(ls...), Source: src, Progress: progress}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	for i, c := range chain {
		info, err := s.Snapshotter().Stat(t.Context(), c.String())
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		want := ""
		if i > 0 {
			want = chain[i-1].String()
		}
		if info.Parent != want {
			t.Errorf("layer %d: parent %q, want %q", i, info.Parent, want)
		}
	}
	if diff := cmp.Diff(readTree(t, reference(t, ls...)), viewTree(t, s, chain[2].String())); diff != "" {
		t.Errorf("snapshot differs from the reference (-want +got):\n%s", diff)
	}
}
