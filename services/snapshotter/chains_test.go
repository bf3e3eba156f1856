package snapshotter

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// stepMaker makes a two-layer chain one layer at a time: the bottom layer
// is committed at once, the top one when the test closes top.
type stepMaker struct {
	layers    []events.Layer
	top       chan struct{}
	mu        sync.Mutex
	committed map[digest.Digest]bool
	calls     atomic.Int32
}

func (m *stepMaker) has(_ context.Context, chainID digest.Digest) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.committed[chainID]
}

func (m *stepMaker) commit(on chainWatch, chainID digest.Digest) {
	m.mu.Lock()
	m.committed[chainID] = true
	m.mu.Unlock()
	on.changed()
}

func (m *stepMaker) makeChain(ctx context.Context, _ string, on chainWatch) (chain, error) {
	m.calls.Add(1)
	c := chain{Layers: m.layers, ChainIDs: snapshot.ChainIDs(m.layers), BuildID: "b1"}
	on.known(c)
	m.commit(on, c.ChainIDs[0])
	select {
	case <-m.top:
	case <-ctx.Done():
		return chain{}, context.Cause(ctx)
	}
	m.commit(on, c.ChainIDs[1])
	return c, nil
}

// TestChainsAnswerEachLayerWhenCommitted: a Prepare of an image's bottom
// layer is answered once that layer is on the node, while the layer above
// is still being made; the top layer's waits for it; both share one build.
func TestChainsAnswerEachLayerWhenCommitted(t *testing.T) {
	t.Parallel()
	layer := func(s string) events.Layer {
		return events.Layer{Blob: ocispec.Descriptor{Digest: digest.FromString("blob " + s)}, DiffID: digest.FromString("diff " + s)}
	}
	m := &stepMaker{layers: []events.Layer{layer("0"), layer("1")}, top: make(chan struct{}), committed: map[digest.Digest]bool{}}
	c := &chains{maker: m, has: m.has, timeout: time.Minute, made: map[string]chain{}}
	ctx, cancel := context.WithTimeoutCause(t.Context(), 30*time.Second, errors.New("a layer was not answered"))
	defer cancel()

	topDone := make(chan error, 1)
	go func() {
		_, err := c.layer(ctx, "img", m.layers[1].Blob.Digest)
		topDone <- err
	}()
	got, err := c.layer(ctx, "img", m.layers[0].Blob.Digest)
	if err != nil {
		t.Fatalf("bottom layer: %v (the top one is still being made)", err)
	}
	if len(got.ChainIDs) != 2 || got.BuildID != "b1" {
		t.Errorf("bottom layer's chain = %+v, want the two-layer chain of build b1", got)
	}
	select {
	case err := <-topDone:
		t.Fatalf("top layer answered (%v) before it was made", err)
	default:
	}
	close(m.top)
	if err := <-topDone; err != nil {
		t.Fatalf("top layer: %v", err)
	}
	if _, err := c.layer(ctx, "img", m.layers[1].Blob.Digest); err != nil {
		t.Fatalf("top layer again: %v", err)
	}
	if n := m.calls.Load(); n != 1 {
		t.Errorf("makeChain called %d times, want one build for every Prepare", n)
	}
}

// TestChainsFailure: when the build fails before the asked layer is
// committed, the Prepare gets its error (and the builder pulls the layer).
func TestChainsFailure(t *testing.T) {
	t.Parallel()
	boom := errors.New("registry refused")
	c := &chains{maker: failingMaker{err: boom}, has: func(context.Context, digest.Digest) bool { return false }, timeout: time.Minute, made: map[string]chain{}}
	if _, err := c.layer(t.Context(), "img", digest.FromString("blob")); !errors.Is(err, boom) {
		t.Fatalf("layer error = %v, want %v", err, boom)
	}
}

type failingMaker struct{ err error }

func (f failingMaker) makeChain(context.Context, string, chainWatch) (chain, error) {
	return chain{}, f.err
}
