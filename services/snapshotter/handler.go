package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stevedore-dev/stevedore/pkg/blobs"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lease"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Store is what the handler needs from the node's snapshot store.
type Store interface {
	// Has reports whether the snapshot of chainID is committed here.
	Has(ctx context.Context, chainID digest.Digest) bool
	// Unpack builds the snapshot of a layer chain.
	Unpack(ctx context.Context, req snapshot.Request) (snapshot.Result, error)
	// HasKey reports whether the committed snapshot key is here.
	HasKey(ctx context.Context, key string) bool
	// Build makes a parentless snapshot from what fill writes.
	Build(ctx context.Context, key string, fill func(ctx context.Context, dir string) error, opts ...snapshot.BuildOption) (snapshot.BuildResult, error)
	// Newest finds the newest snapshot Build made with a label.
	Newest(ctx context.Context, label, value string) (snapshot.Built, bool)
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
	reader *blobs.Reader
	flight Flight
	index  CacheIndex
	window int
	// limits bound what a snapshot's layers may expand to.
	limits snapshot.Limits
	now    func() time.Time
	// busy is held (read) by every unpack and (write) by prune.
	busy *sync.RWMutex
	// http downloads the content of http sources.
	http *http.Client
	// downloads is the directory of the pullers' kept http downloads
	// (Config.Downloads), cleaned; empty reads none.
	downloads string
	// git checks out the commits of git sources (git.go), from the node's
	// cache of bare repositories.
	git GitCheckouts
	// local reads the directories of local sources from client sessions
	// (local.go).
	local LocalSessions
	// secrets reads the credentials of git and http sources from client
	// sessions (git.go, file.go).
	secrets Secrets
	// clients checks that a build's client session still answers
	// (client.go); nil never checks.
	clients Clients
	// clientCheck is how often it is checked.
	clientCheck time.Duration
	// fetchedBytes and unpackedBytes count what this node downloaded and
	// extracted; nil when no metrics are kept.
	fetchedBytes, unpackedBytes prometheus.Counter
	// remotePrepares counts builders' remote-snapshot Prepares by
	// outcome; nil when no metrics are kept.
	remotePrepares *prometheus.CounterVec
	// makers make each kind of content (makers.go).
	makers map[source.ContentKind]maker
}

// HandlerConfig is what a Handler works with.
type HandlerConfig struct {
	// Node names this node in cache records and snapshot.ready.
	Node string
	// Store holds the node's snapshots.
	Store Store
	// Reader reads layer blobs from registries and client sessions.
	Reader *blobs.Reader
	// Flight makes each snapshot once for the fleet.
	Flight Flight
	// Index is the cache index the snapshots are recorded in.
	Index CacheIndex
	// Window bounds the layer downloads in flight per snapshot. Zero
	// means snapshot.DefaultWindow.
	Window int
	// Limits bound what a snapshot's layers may expand to (a zero field
	// is no limit: Config's defaults are filled in by the service).
	Limits snapshot.Limits
	// Busy is held (read) by every unpack and (write) by prune. Nil means
	// a mutex of the handler's own.
	Busy *sync.RWMutex
	// HTTP downloads the content of http sources. Nil means a client
	// with the environment's proxy that waits 30s at most for headers.
	HTTP *http.Client
	// Git checks out the commits of git sources.
	Git GitCheckouts
	// Local reads the directories of local sources from client sessions.
	Local LocalSessions
	// Secrets reads the credentials of git and http sources.
	Secrets Secrets
	// Clients checks that a build's client session still answers; nil
	// never checks.
	Clients Clients
	// ClientCheck is how often it is checked.
	ClientCheck time.Duration
	// Downloads is the directory of the pullers' kept http downloads as
	// this node sees it (Config.Downloads); empty reads none of them.
	Downloads string
	// Metrics, when set, gets the counters of fetched and unpacked bytes
	// and of builders' remote Prepares.
	Metrics prometheus.Registerer
}

// NewHandler returns a handler working with cfg; it fails only when its
// counters cannot be registered.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	h := &Handler{node: cfg.Node, store: cfg.Store, reader: cfg.Reader, flight: cfg.Flight, index: cfg.Index,
		window: cfg.Window, limits: cfg.Limits, now: time.Now, busy: cfg.Busy, http: cfg.HTTP, git: cfg.Git, local: cfg.Local, secrets: cfg.Secrets,
		clients: cfg.Clients, clientCheck: cfg.ClientCheck}
	h.makers = h.newMakers()
	if h.busy == nil {
		h.busy = &sync.RWMutex{}
	}
	if h.http == nil {
		h.http = newHTTPClient()
	}
	if cfg.Downloads != "" {
		h.downloads = filepath.Clean(cfg.Downloads)
	}
	if reg := cfg.Metrics; reg != nil {
		h.fetchedBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "stevedore_snapshotter_fetched_bytes_total",
			Help: "Compressed bytes of the layer blobs this node downloaded."})
		h.unpackedBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "stevedore_snapshotter_unpacked_bytes_total",
			Help: "Uncompressed bytes of the layers this node extracted."})
		h.remotePrepares = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stevedore_snapshotter_remote_prepares_total",
			Help: "Builders' Prepares of image layers on the snapshots sockets, by outcome: remote (answered from the fleet) or fallback (the builder pulls)."},
			[]string{"outcome"})
		for _, c := range []prometheus.Collector{h.fetchedBytes, h.unpackedBytes, h.remotePrepares} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("snapshotter: metrics: %w", err)
			}
		}
	}
	return h, nil
}

// snapshotRecord is what BucketSnapshots holds for a chainID.
type snapshotRecord struct {
	Node      string    `json:"node"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"createdAt"`
	// placement is the maker's snapshotter and directory, so a node that
	// follows it can record them; zero in records written before it was.
	placement
}

// ProgressInterval is the least time between two progress events of one
// layer (the last one always goes out).
const ProgressInterval = 150 * time.Millisecond

// Snapshot handles snapshot.requested.
func (h *Handler) Snapshot(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
	out, err := h.snapshot(ctx, in)
	return h.where(out), err
}

func (h *Handler) snapshot(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
	mk, err := h.makerOf(in)
	if err != nil {
		return nil, err
	}
	ctx, stop := h.watchClient(ctx, in.Session)
	defer stop()
	return mk(ctx, in)
}

// snapshotLayers makes the snapshot of an image's layer chain
// (in.CacheOpts).
func (h *Handler) snapshotLayers(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
	layers := in.CacheOpts.Layers
	if err := validLayers(layers); err != nil {
		return nil, failure.Invalid(fmt.Errorf("snapshot.requested: %w", err))
	}
	if c := in.CacheOpts.Cached; c != nil {
		if err := validLayers(c.Layers); err != nil {
			return nil, failure.Invalid(fmt.Errorf("snapshot.requested: cached result: %w", err))
		}
	}
	ready := events.SnapshotReady{Source: in.Source, Keys: in.Keys, Layers: layers, Node: h.node}
	locations := []events.BlobLocation{{Ref: in.CacheOpts.Ref}}
	if o := in.CacheOpts.Origin; o != nil {
		locations = []events.BlobLocation{*o}
	}
	var chainID digest.Digest
	var where placement
	if len(layers) > 0 {
		chain := snapshot.ChainIDs(layers)
		chainID = chain[len(chain)-1]
		ready.ChainID, ready.SnapshotKey = chainID.String(), chainID.String()
		m, err := h.make(ctx, in, chainID)
		if err != nil {
			return nil, err
		}
		ready.Node, ready.Size, ready.Followed = m.record.Node, m.record.Size, m.followed
		ready.Fetched, ready.Reused = len(m.result.Fetched), m.result.Reused
		where = h.placementOf(m.record)
		ready.Snapshotter, ready.SnapshotsDir = where.Snapshotter, where.SnapshotsDir
		h.count(m)
		if m.layers != nil {
			layers, locations = m.layers, m.locations
			ready.Layers = layers
		}
	}
	digests := make([]digest.Digest, 0, len(in.Keys))
	for _, k := range in.Keys {
		digests = append(digests, k.Digest)
	}
	if len(digests) > 0 {
		err := h.index.Put(ctx, events.CacheRecord{
			Digests: digests, ChainID: chainID, Layers: layers, Node: ready.Node,
			SnapshotKey: ready.SnapshotKey, Size: ready.Size, Locations: locations, CreatedAt: h.now().UTC(),
			Snapshotter: where.Snapshotter, SnapshotsDir: where.SnapshotsDir,
		})
		if err != nil {
			return nil, failure.Unavailable(err)
		}
	}
	return []events.Event{events.New(ready)}, nil
}

// made is what make did.
type made struct {
	// record is where the snapshot is.
	record snapshotRecord
	// result is what this node's Unpack did (zero when it followed).
	result snapshot.Result
	// followed is set when another node made it.
	followed bool
	// layers and locations are the blobs this node unpacked and where
	// they came from; nil when it did not unpack.
	layers    []events.Layer
	locations []events.BlobLocation
}

// make returns where the snapshot of chainID is, making it on this node
// when no node has it or is making it.
func (h *Handler) make(ctx context.Context, in events.SnapshotRequested, chainID digest.Digest) (made, error) {
	layers := in.CacheOpts.Layers
	if h.has(ctx, chainID) {
		// Made here before (by this request's earlier delivery, say): its
		// true size, from the store.
		size := h.existingSize(ctx, snapshot.ChainIDs(layers))
		return made{record: snapshotRecord{Node: h.node, Size: size, placement: h.placement()}, result: snapshot.Result{Reused: len(layers), Size: size}}, nil
	}
	var m made
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
		m.result, m.layers, m.locations, err = h.unpack(ctx, in, func(p events.Payload) { bus.Emit(ctx, p) })
		if err != nil {
			return nil, err
		}
		return json.Marshal(snapshotRecord{Node: h.node, Size: m.result.Size, CreatedAt: h.now().UTC(), placement: h.placement()})
	})
	if err != nil {
		return made{}, err
	}
	if err := json.Unmarshal(out.Value, &m.record); err != nil {
		return made{}, fmt.Errorf("stored snapshot record of %s: %w", chainID, err)
	}
	if out.Outcome == lease.Stored && m.record.Node == h.node {
		m.result.Reused = len(layers)
	}
	m.followed = out.Outcome == lease.Followed
	return m, nil
}

// unpack makes the snapshot on this node. With a cached result (an
// imported cache), it reads the cache's blobs first; if that fails for any
// reason but the end of ctx, it says so in a progress event and takes the
// layers from the origin instead (the registry, or CacheOpts.Origin: an
// oci-layout's client session): a lazy hit never fails a pull. Progress
// goes to emit.
func (h *Handler) unpack(ctx context.Context, in events.SnapshotRequested, emit func(events.Payload)) (snapshot.Result, []events.Layer, []events.BlobLocation, error) {
	opts := in.CacheOpts
	origin := events.BlobLocation{Ref: opts.Ref}
	if opts.Origin != nil {
		origin = *opts.Origin
	}
	progress := newProgress(emit, in.Source.Identifier).update
	if c := opts.Cached; c != nil && sameDiffIDs(c.Layers, opts.Layers) && len(c.Locations) > 0 {
		res, err := h.store.Unpack(ctx, snapshot.Request{Layers: c.Layers, Source: h.source(c.Locations), Window: h.window, Progress: progress, Limits: h.limits})
		if err == nil {
			return res, c.Layers, append(slices.Clone(c.Locations), origin), nil
		}
		if cause := context.Cause(ctx); cause != nil {
			return res, nil, nil, cause
		}
		if errors.Is(err, snapshot.ErrLimit) {
			return res, nil, nil, err // the origin's layers are the same size
		}
		now := time.Now()
		emit(events.Progress{Vertex: in.Source.Identifier, ID: "cache " + c.Locations[0].String() + " unusable, pulling from " + origin.String(),
			Action: "fallback", Started: &now, Completed: &now, Error: err.Error()})
	}
	res, err := h.store.Unpack(ctx, snapshot.Request{Layers: opts.Layers, Source: h.source([]events.BlobLocation{origin}), Window: h.window, Progress: progress, Limits: h.limits})
	return res, opts.Layers, []events.BlobLocation{origin}, err
}

// source opens blobs from locations, trying each in turn.
func (h *Handler) source(locations []events.BlobLocation) snapshot.BlobSource {
	return snapshot.BlobSourceFunc(func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
		rc, _, err := h.reader.Open(ctx, locations, d)
		return rc, err
	})
}

// validLayers checks what an event says of layers before anything is
// computed from it: digests that parse, sizes that are not negative.
func validLayers(layers []events.Layer) error {
	for i, l := range layers {
		if err := l.Blob.Digest.Validate(); err != nil {
			return fmt.Errorf("layer %d: blob digest %q: %w", i, l.Blob.Digest, err)
		}
		if err := l.DiffID.Validate(); err != nil {
			return fmt.Errorf("layer %d: diffID %q: %w", i, l.DiffID, err)
		}
		if l.Blob.Size < 0 {
			return fmt.Errorf("layer %d: negative blob size %d", i, l.Blob.Size)
		}
	}
	return nil
}

func sameDiffIDs(a, b []events.Layer) bool {
	return slices.EqualFunc(a, b, func(x, y events.Layer) bool { return x.DiffID == y.DiffID })
}

// count adds what this node fetched and unpacked to the byte counters.
func (h *Handler) count(m made) {
	if h.fetchedBytes == nil {
		return
	}
	for _, d := range m.result.Fetched {
		for _, l := range m.layers {
			if l.Blob.Digest == d {
				h.fetchedBytes.Add(float64(l.Blob.Size))
				break
			}
		}
	}
	h.unpackedBytes.Add(float64(m.result.Unpacked))
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
	emit   func(events.Payload)
	vertex string
	mu     sync.Mutex
	last   map[string]time.Time
}

func newProgress(emit func(events.Payload), vertex string) *progress {
	return &progress{emit: emit, vertex: vertex, last: map[string]time.Time{}}
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
	p.emit(ev)
}

var _ blobs.Registry = (*registry.Client)(nil)
