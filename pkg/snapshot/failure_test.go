//go:build linux

package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

var (
	errSource = errors.New("registry unavailable")
	errBody   = errors.New("connection reset")
)

func threeLayers(t *testing.T) []layer {
	t.Helper()
	return []layer{
		buildLayer(t, gzipped, dir("a", 0o755), file("a/one", "first layer", 0o644)),
		buildLayer(t, zstdded, dir("b", 0o755), file("b/two", "second layer, a bit longer to have a middle", 0o644), whiteout("a/one")),
		buildLayer(t, unpacked, file("c", "third layer", 0o600)),
	}
}

// TestUnpackFailureLeavesNothing breaks one layer in each way a download or
// a descriptor can be wrong, at the bottom (streamed straight into the
// snapshot) and in the middle (downloaded into the content store first):
// Unpack fails, nothing of the bad layer or above is committed, no active
// snapshot or ingest is left, and a good Unpack then succeeds.
func TestUnpackFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// breakLayer changes the layer's descriptor and the source.
		breakLayer func(l *layer, src *source)
		want       error
	}{
		{name: "truncated body", want: snapshot.ErrVerify, breakLayer: func(l *layer, src *source) {
			src.body = onlyFor(l.Blob.Digest, src.body, func(data []byte) (io.Reader, error) {
				return bytes.NewReader(data[:len(data)/2]), nil
			})
		}},
		{name: "wrong digest", want: snapshot.ErrVerify, breakLayer: func(l *layer, src *source) {
			l.Blob.Digest = digest.FromString("some other blob")
			src.blobs[l.Blob.Digest] = l.blob
		}},
		{name: "corrupt body", want: snapshot.ErrVerify, breakLayer: func(l *layer, src *source) {
			bad := bytes.Clone(l.blob)
			bad[len(bad)/2] ^= 0xff
			src.blobs[l.Blob.Digest] = bad
		}},
		{name: "size too small", want: snapshot.ErrVerify, breakLayer: func(l *layer, _ *source) {
			l.Blob.Size = int64(len(l.blob) / 2)
		}},
		{name: "size one byte short", want: snapshot.ErrVerify, breakLayer: func(l *layer, _ *source) {
			l.Blob.Size = int64(len(l.blob) - 1)
		}},
		{name: "size too large", want: snapshot.ErrVerify, breakLayer: func(l *layer, _ *source) {
			l.Blob.Size = int64(len(l.blob) + 100)
		}},
		{name: "longer body than its size", want: snapshot.ErrVerify, breakLayer: func(l *layer, src *source) {
			src.blobs[l.Blob.Digest] = append(bytes.Clone(l.blob), make([]byte, 4096)...)
		}},
		{name: "wrong diffID", want: snapshot.ErrVerify, breakLayer: func(l *layer, _ *source) {
			l.DiffID = digest.FromString("not this layer")
		}},
		{name: "source error", want: errSource, breakLayer: func(l *layer, src *source) {
			src.body = onlyFor(l.Blob.Digest, src.body, func([]byte) (io.Reader, error) { return nil, errSource })
		}},
		{name: "body error", want: errBody, breakLayer: func(l *layer, src *source) {
			src.body = onlyFor(l.Blob.Digest, src.body, func(data []byte) (io.Reader, error) {
				return &failingReader{r: bytes.NewReader(data[:len(data)/2]), err: errBody}, nil
			})
		}},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			for _, bad := range []int{0, 1} {
				t.Run(fmt.Sprintf("%s/%s/layer%d", kind, tc.name, bad), func(t *testing.T) {
					t.Parallel()
					needKind(t, kind)
					good := threeLayers(t)
					broken := append([]layer(nil), good...)
					src := newSource(good...)
					tc.breakLayer(&broken[bad], src)
					if bad == 1 {
						// Hold the bottom layer's body until the broken one's
						// download has ended, so that the broken layer is
						// downloaded in the background, not streamed.
						gate := make(chan struct{})
						var once sync.Once
						src.done = func(d digest.Digest) {
							if d == broken[1].Blob.Digest {
								once.Do(func() { close(gate) })
							}
						}
						src.body = onlyFor(good[0].Blob.Digest, src.body, func(data []byte) (io.Reader, error) {
							return &gatedReader{ctx: t.Context(), gate: gate, r: bytes.NewReader(data)}, nil
						})
					}
					s := openStore(t, kind)

					_, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(broken...), Source: src})
					if !errors.Is(err, tc.want) {
						t.Fatalf("Unpack error = %v, want %v", err, tc.want)
					}
					badChain := snapshot.ChainIDs(eventsOf(broken...))
					goodChain := snapshot.ChainIDs(eventsOf(good...))
					for i := range good {
						want := i < bad
						if got := s.Has(t.Context(), badChain[i]); got != want {
							t.Errorf("Has(layer %d of the broken chain) = %t, want %t", i, got, want)
						}
						if got := s.Has(t.Context(), goodChain[i]); got != want {
							t.Errorf("Has(layer %d of the good chain) = %t, want %t", i, got, want)
						}
					}
					for _, d := range []digest.Digest{broken[bad].Blob.Digest, good[bad].Blob.Digest} {
						if _, err := s.Content().Info(t.Context(), d); !errdefs.IsNotFound(err) {
							t.Errorf("content store Info(%s) = %v, want not found", d, err)
						}
					}
					committed, other := snapshotNames(t, s)
					if len(other) != 0 {
						t.Errorf("snapshots left active: %v", other)
					}
					if len(committed) != bad {
						t.Errorf("committed snapshots = %v, want the %d below the broken layer", committed, bad)
					}
					if refs := ingests(t, s); len(refs) != 0 {
						t.Errorf("ingests left: %v", refs)
					}

					fixed := newSource(good...)
					res, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(good...), Source: fixed})
					if err != nil {
						t.Fatalf("Unpack with a good source: %v", err)
					}
					if res.Reused != bad || res.Extracted != len(good)-bad {
						t.Errorf("good Unpack reused %d and extracted %d, want %d and %d", res.Reused, res.Extracted, bad, len(good)-bad)
					}
					if diff := cmp.Diff(readTree(t, reference(t, good...)), viewTree(t, s, res.Key)); diff != "" {
						t.Errorf("snapshot after the failure (-want +got):\n%s", diff)
					}
				})
			}
		}
	}
}

// onlyFor makes the body of blob d with mk and leaves others to next.
func onlyFor(d digest.Digest, next func(context.Context, digest.Digest, []byte) (io.Reader, error), mk func([]byte) (io.Reader, error)) func(context.Context, digest.Digest, []byte) (io.Reader, error) {
	return func(ctx context.Context, got digest.Digest, data []byte) (io.Reader, error) {
		if got == d {
			return mk(data)
		}
		if next != nil {
			return next(ctx, got, data)
		}
		return bytes.NewReader(data), nil
	}
}

func TestMaterializeFailures(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	good := threeLayers(t)
	cases := []struct {
		name       string
		breakLayer func(l *layer, src *source)
		want       error
	}{
		{name: "truncated body", want: snapshot.ErrVerify, breakLayer: func(l *layer, src *source) {
			src.blobs[l.Blob.Digest] = l.blob[:len(l.blob)/2]
		}},
		{name: "wrong digest", want: snapshot.ErrVerify, breakLayer: func(l *layer, src *source) {
			l.Blob.Digest = digest.FromString("some other blob")
			src.blobs[l.Blob.Digest] = l.blob
		}},
		{name: "size too large", want: snapshot.ErrVerify, breakLayer: func(l *layer, _ *source) {
			l.Blob.Size += 10
		}},
		{name: "wrong diffID", want: snapshot.ErrVerify, breakLayer: func(l *layer, _ *source) {
			l.DiffID = digest.FromString("not this layer")
		}},
		{name: "source error", want: errSource, breakLayer: func(l *layer, src *source) {
			src.body = onlyFor(l.Blob.Digest, nil, func([]byte) (io.Reader, error) { return nil, errSource })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, snapshot.KindNative)
			broken := append([]layer(nil), good...)
			src := newSource(good...)
			tc.breakLayer(&broken[1], src)
			err := s.Materialize(t.Context(), eventsOf(broken...), t.TempDir(), src)
			if !errors.Is(err, tc.want) {
				t.Errorf("Materialize error = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestInvalidDescriptors: malformed digests are rejected, not panicked on.
func TestInvalidDescriptors(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	good := threeLayers(t)[0]
	cases := []struct {
		name   string
		change func(l *layer)
	}{
		{name: "empty blob digest", change: func(l *layer) { l.Blob.Digest = "" }},
		{name: "unknown algorithm", change: func(l *layer) { l.Blob.Digest = "md5:0123456789abcdef0123456789abcdef" }},
		{name: "short hex", change: func(l *layer) { l.Blob.Digest = "sha256:abc" }},
		{name: "empty diffID", change: func(l *layer) { l.DiffID = "" }},
		{name: "negative size", change: func(l *layer) { l.Blob.Size = -1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, snapshot.KindNative)
			l := good
			tc.change(&l)
			src := newSource(good)
			if _, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(l), Source: src}); err == nil {
				t.Error("Unpack accepted the descriptor")
			}
			if err := s.Materialize(t.Context(), eventsOf(l), t.TempDir(), src); err == nil {
				t.Error("Materialize accepted the descriptor")
			}
			if got := src.opened(); len(got) != 0 {
				t.Errorf("source opened %v for an invalid descriptor", got)
			}
		})
	}
}

// TestUnpackCancel cancels an Unpack while a layer downloads: it returns
// the cause and leaves the layers it finished, and nothing else.
func TestUnpackCancel(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			ls := threeLayers(t)
			chain := snapshot.ChainIDs(eventsOf(ls...))
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			stop := errors.New("build cancelled")
			src := newSource(ls...)
			src.body = onlyFor(ls[1].Blob.Digest, nil, func(data []byte) (io.Reader, error) {
				// Half the body, then nothing until the context is done.
				return io.MultiReader(bytes.NewReader(data[:len(data)/2]), &gatedReader{ctx: ctx, r: bytes.NewReader(nil)}), nil
			})
			progress := func(u snapshot.Update) {
				if u.Layer == ls[0].Blob.Digest && u.Phase == snapshot.Extracting && u.Done {
					cancel(stop)
				}
			}
			_, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(ls...), Source: src, Progress: progress})
			if !errors.Is(err, stop) {
				t.Fatalf("Unpack error = %v, want the cancel cause", err)
			}
			if !s.Has(t.Context(), chain[0]) || s.Has(t.Context(), chain[1]) || s.Has(t.Context(), chain[2]) {
				t.Errorf("Has after cancel = %t %t %t, want only the bottom layer", s.Has(t.Context(), chain[0]), s.Has(t.Context(), chain[1]), s.Has(t.Context(), chain[2]))
			}
			if _, other := snapshotNames(t, s); len(other) != 0 {
				t.Errorf("snapshots left active: %v", other)
			}
			if refs := ingests(t, s); len(refs) != 0 {
				t.Errorf("ingests left: %v", refs)
			}
			if now, _ := src.openNow(); now != 0 {
				t.Errorf("%d bodies left open", now)
			}
		})
	}
}

// TestUnpackOthersFailureIsNotOurs: two Unpacks of the same layers, one
// from blobs compressed otherwise whose source breaks mid-body, share an
// extraction; the one with a good source still succeeds.
func TestUnpackOthersFailureIsNotOurs(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			good, other := smallLayers(t, 1, "shared")
			goodOpened := make(chan struct{})
			badExtracting := make(chan struct{})
			bad := newSource(other...)
			bad.body = func(ctx context.Context, _ digest.Digest, data []byte) (io.Reader, error) {
				gate := make(chan struct{})
				go func() {
					<-goodOpened
					time.Sleep(100 * time.Millisecond) // let the good Unpack join the extraction
					close(gate)
				}()
				return io.MultiReader(
					bytes.NewReader(data[:len(data)/2]),
					&gatedReader{ctx: ctx, gate: gate, r: &failingReader{r: bytes.NewReader(nil), err: errBody}},
				), nil
			}
			badProgress := func(u snapshot.Update) {
				if u.Phase == snapshot.Extracting && !u.Done {
					close(badExtracting) // the breaking Unpack leads the extraction
				}
			}
			src := newSource(good...)
			src.body = func(_ context.Context, _ digest.Digest, data []byte) (io.Reader, error) {
				close(goodOpened)
				return bytes.NewReader(data), nil
			}
			badErr := make(chan error, 1)
			go func() {
				_, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(other...), Source: bad, Progress: badProgress})
				badErr <- err
			}()
			<-badExtracting
			res, err := s.Unpack(t.Context(), snapshot.Request{Layers: eventsOf(good...), Source: src})
			if err != nil {
				t.Fatalf("Unpack with a good source: %v", err)
			}
			if res.Extracted != 1 {
				t.Errorf("Unpack with a good source = %+v, want it to extract the layer", res)
			}
			if err := <-badErr; !errors.Is(err, errBody) {
				t.Errorf("Unpack with a breaking source = %v, want %v", err, errBody)
			}
			if diff := cmp.Diff(readTree(t, reference(t, good...)), viewTree(t, s, res.Key)); diff != "" {
				t.Errorf("snapshot (-want +got):\n%s", diff)
			}
		})
	}
}
