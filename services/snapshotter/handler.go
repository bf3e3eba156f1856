package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lease"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// Store is what the handler needs from the node's snapshot store.
type Store interface {
	// Has reports whether the snapshot of chainID is committed here.
	Has(ctx context.Context, chainID digest.Digest) bool
	// Unpack builds the snapshot of a layer chain.
	Unpack(ctx context.Context, req snapshot.Request) (snapshot.Result, error)
}

// Blobs opens blobs of a repository (a registry client).
type Blobs interface {
	Open(ctx context.Context, ref string, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// Flight runs a piece of work once across the fleet (see lease.Flight).
type Flight interface {
	Do(ctx context.Context, key string, accept func([]byte) bool, work func(context.Context) ([]byte, error)) (lease.Result, error)
}

// CacheIndex records results.
type CacheIndex interface {
	Put(ctx context.Context, rec events.CacheRecord) error
}

// Handler makes snapshots. A snapshot already on this node is reused; one
// on another node (or being made there) is followed; otherwise this node
// makes it, once for the whole fleet, and records it in the cache index
// under every key of the request.
type Handler struct {
	node   string
	store  Store
	blobs  Blobs
	flight Flight
	index  CacheIndex
	window int
	now    func() time.Time
	// busy is held (read) by every unpack and (write) by prune.
	busy *sync.RWMutex
}

// snapshotRecord is what BucketSnapshots holds for a chainID.
type snapshotRecord struct {
	Node      string    `json:"node"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"createdAt"`
}

// ProgressInterval is the least time between two progress events of one
// layer (the last one always goes out).
const ProgressInterval = 150 * time.Millisecond

// Snapshot handles snapshot.requested.
func (h *Handler) Snapshot(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
	if in.CacheOpts == nil {
		return nil, bus.Invalid(errors.New("snapshot.requested carries no cacheOpts"))
	}
	layers := in.CacheOpts.Layers
	ready := events.SnapshotReady{Source: in.Source, Keys: in.Keys, Layers: layers, Node: h.node}
	var chainID digest.Digest
	if len(layers) > 0 {
		chain := snapshot.ChainIDs(layers)
		chainID = chain[len(chain)-1]
		ready.ChainID, ready.SnapshotKey = chainID.String(), chainID.String()
		rec, res, followed, err := h.make(ctx, in, chainID)
		if err != nil {
			return nil, classify(err)
		}
		ready.Node, ready.Size, ready.Followed = rec.Node, rec.Size, followed
		ready.Fetched, ready.Reused = len(res.Fetched), res.Reused
	}
	digests := make([]digest.Digest, 0, len(in.Keys))
	for _, k := range in.Keys {
		digests = append(digests, k.Digest)
	}
	if len(digests) > 0 {
		err := h.index.Put(ctx, events.CacheRecord{
			Digests: digests, ChainID: chainID, Layers: layers, Node: ready.Node,
			SnapshotKey: ready.SnapshotKey, Size: ready.Size, CreatedAt: h.now().UTC(),
		})
		if err != nil {
			return nil, bus.Unavailable(err)
		}
	}
	return []events.Event{events.New(ready)}, nil
}

// make returns where the snapshot of chainID is, making it on this node
// when no node has it or is making it.
func (h *Handler) make(ctx context.Context, in events.SnapshotRequested, chainID digest.Digest) (snapshotRecord, snapshot.Result, bool, error) {
	layers := in.CacheOpts.Layers
	if h.has(ctx, chainID) {
		return snapshotRecord{Node: h.node}, snapshot.Result{Reused: len(layers)}, false, nil
	}
	var res snapshot.Result
	accept := func(v []byte) bool {
		var r snapshotRecord
		if json.Unmarshal(v, &r) != nil {
			return false
		}
		// Our own record is good only while the snapshot is still here.
		return r.Node != h.node || h.has(ctx, chainID)
	}
	out, err := h.flight.Do(ctx, "snapshot."+chainID.Encoded(), accept, func(ctx context.Context) ([]byte, error) {
		h.busy.RLock()
		defer h.busy.RUnlock()
		var err error
		res, err = h.store.Unpack(ctx, snapshot.Request{
			Layers: layers,
			Source: snapshot.BlobSourceFunc(func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
				return h.blobs.Open(ctx, in.CacheOpts.Ref, d)
			}),
			Window:   h.window,
			Progress: newProgress(ctx, in.Source.Identifier).update,
		})
		if err != nil {
			return nil, err
		}
		return json.Marshal(snapshotRecord{Node: h.node, Size: res.Size, CreatedAt: h.now().UTC()})
	})
	if err != nil {
		return snapshotRecord{}, res, false, err
	}
	var rec snapshotRecord
	if err := json.Unmarshal(out.Value, &rec); err != nil {
		return rec, res, false, fmt.Errorf("stored snapshot record of %s: %w", chainID, err)
	}
	if out.Outcome == lease.Stored && rec.Node == h.node {
		res.Reused = len(layers)
	}
	return rec, res, out.Outcome == lease.Followed, nil
}

func (h *Handler) has(ctx context.Context, chainID digest.Digest) bool {
	h.busy.RLock()
	defer h.busy.RUnlock()
	return h.store.Has(ctx, chainID)
}

// progress turns Unpack's updates into progress events with BuildKit's
// labels ("sha256:<layer>" while downloading, "extracting sha256:<layer>"),
// at most one per layer and phase every ProgressInterval, always the last.
type progress struct {
	ctx    context.Context
	vertex string
	mu     sync.Mutex
	last   map[string]time.Time
}

func newProgress(ctx context.Context, vertex string) *progress {
	return &progress{ctx: ctx, vertex: vertex, last: map[string]time.Time{}}
}

func (p *progress) update(u snapshot.Update) {
	id := u.Layer.String()
	ev := events.Progress{Vertex: p.vertex, ID: id, Action: "downloading", Current: u.Current, Total: u.Total}
	if u.Phase == snapshot.Extracting {
		id = "extracting " + id
		ev = events.Progress{Vertex: p.vertex, ID: id, Action: "extracting"}
	}
	started := u.Started
	ev.Started = &started
	now := time.Now()
	if u.Done {
		ev.Action, ev.Completed = "done", &now
	}
	p.mu.Lock()
	if !u.Done && now.Sub(p.last[id]) < ProgressInterval {
		p.mu.Unlock()
		return
	}
	p.last[id] = now
	p.mu.Unlock()
	bus.Emit(p.ctx, ev)
}

// classify maps the snapshot store's and the registry's errors to bus
// classes; it is the snapshotter's one place for it.
func classify(err error) error {
	var rerr *registry.Error
	switch {
	case errors.Is(err, snapshot.ErrVerify):
		return bus.Invalid(err)
	case errors.As(err, &rerr):
		switch rerr.Kind {
		case registry.KindNotFound:
			return bus.NotFound(err)
		case registry.KindUnauthorized:
			return bus.Unauthorized(err)
		case registry.KindInvalid:
			return bus.Invalid(err)
		}
		return bus.Unavailable(err)
	}
	return err
}

var _ Blobs = (*registry.Client)(nil)
