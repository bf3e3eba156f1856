package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// The labels of a Prepare that names an image layer: a remote snapshot.
const (
	// LabelTargetRef is the name the builder wants the layer committed
	// under (BuildKit's and containerd's unpacker's: the layer's chainID).
	LabelTargetRef = "containerd.io/snapshot.ref"
	// LabelStargzReference is the image reference, BuildKit's
	// (util/estargz SnapshotLabels, on a worker whose snapshotter is named
	// stargz).
	LabelStargzReference = "containerd.io/snapshot/remote/stargz.reference"
	// LabelStargzDigest is the layer's blob digest, BuildKit's.
	LabelStargzDigest = "containerd.io/snapshot/remote/stargz.digest"
	// LabelStargzLayers lists this and the following layers' digests,
	// comma-separated and cut to the label size limit, BuildKit's.
	LabelStargzLayers = "containerd.io/snapshot/remote/stargz.layers"
	// LabelCRIImageRef is the image reference, containerd CRI's
	// (snapshotters.AppendInfoHandlerWrapper).
	LabelCRIImageRef = "containerd.io/snapshot/cri.image-ref"
	// LabelCRILayerDigest is the layer's blob digest, containerd CRI's.
	LabelCRILayerDigest = "containerd.io/snapshot/cri.layer-digest"
	// LabelCRIImageLayers lists this and the following layers' digests,
	// containerd CRI's.
	LabelCRIImageLayers = "containerd.io/snapshot/cri.image-layers"
)

// errRemoteTimeout ends a remote snapshot that took longer than
// Config.RemoteTimeout; the builder then pulls the layer itself.
var errRemoteTimeout = errors.New("remote snapshot timed out")

// remoteLayer is the image layer a Prepare's labels name.
type remoteLayer struct {
	// Ref is the image reference.
	Ref string
	// Blob is the layer's compressed digest.
	Blob digest.Digest
	// Target is the name to commit the layer under.
	Target string
}

// parseRemote reads the layer a Prepare's labels name, BuildKit's labels
// first, then CRI's; false when they name none.
func parseRemote(labels map[string]string) (remoteLayer, bool) {
	target := labels[LabelTargetRef]
	if target == "" {
		return remoteLayer{}, false
	}
	for _, set := range [][2]string{{LabelStargzReference, LabelStargzDigest}, {LabelCRIImageRef, LabelCRILayerDigest}} {
		ref, dgst := labels[set[0]], labels[set[1]]
		if ref == "" || dgst == "" {
			continue
		}
		d, err := digest.Parse(dgst)
		if err != nil {
			continue
		}
		return remoteLayer{Ref: ref, Blob: d, Target: target}, true
	}
	return remoteLayer{}, false
}

// chain is an image's layer chain, made on this node.
type chain struct {
	// Layers are the image's layers, bottom first.
	Layers []events.Layer
	// ChainIDs are the chainIDs of every prefix of Layers: the names of
	// the fleet's snapshots on this node.
	ChainIDs []digest.Digest
	// BuildID is the build that made (or found) it.
	BuildID string
	// at is when it was made.
	at time.Time
}

// chainMaker makes an image's layer chain on this node.
type chainMaker interface {
	// makeChain makes ref's chain, calling known with the chain (its
	// layers and chainIDs) as soon as it knows them, and changed whenever
	// a layer of it may have been committed.
	makeChain(ctx context.Context, ref string, on chainWatch) (chain, error)
}

// chainWatch is what a chainMaker tells while it makes a chain.
type chainWatch struct {
	known   func(chain)
	changed func()
}

// chains runs one chainMaker call per image at a time for every Prepare
// that asks (the layers of one image share one build), answers each layer
// as soon as that layer is committed on the node (the builder then shares
// it while the layers above are still being made), and remembers the made
// chain for a minute, while the snapshot is still here.
type chains struct {
	maker   chainMaker
	has     func(ctx context.Context, chainID digest.Digest) bool
	timeout time.Duration
	mu      sync.Mutex
	made    map[string]chain
	flights map[string]*chainFlight
}

// chainFlight is the making of one image's chain.
type chainFlight struct {
	mu      sync.Mutex
	c       chain
	known   bool
	done    bool
	err     error
	changed chan struct{} // closed and replaced on every change
}

func (f *chainFlight) update(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
}

// chainMemo is how long a made chain answers later Prepares without a new
// build.
const chainMemo = time.Minute

// layer returns ref's chain once the layer whose blob is blob is committed
// on this node (or once the whole chain is made, when blob is not one of
// its layers), starting the chain's build unless one runs.
func (c *chains) layer(ctx context.Context, ref string, blob digest.Digest) (chain, error) {
	c.mu.Lock()
	m, ok := c.made[ref]
	c.mu.Unlock()
	if ok && time.Since(m.at) < chainMemo && c.has(ctx, m.ChainIDs[len(m.ChainIDs)-1]) {
		return m, nil
	}
	f := c.flight(ctx, ref)
	for {
		f.mu.Lock()
		ch, known, done, err, cur := f.changed, f.known, f.done, f.err, f.c
		f.mu.Unlock()
		if done {
			return cur, err
		}
		if known {
			if i := slices.IndexFunc(cur.Layers, func(x events.Layer) bool { return x.Blob.Digest == blob }); i >= 0 && c.has(ctx, cur.ChainIDs[i]) {
				return cur, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return chain{}, context.Cause(ctx)
		}
	}
}

// flight returns the running build of ref's chain, started when none is.
func (c *chains) flight(ctx context.Context, ref string) *chainFlight {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[ref]; ok {
		return f
	}
	if c.flights == nil {
		c.flights = map[string]*chainFlight{}
	}
	f := &chainFlight{changed: make(chan struct{})}
	c.flights[ref] = f
	// Not the first asker's ctx: the others wait on this too.
	ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), c.timeout, errRemoteTimeout)
	go func() {
		defer cancel()
		m, err := c.maker.makeChain(ctx, ref, chainWatch{
			known:   func(k chain) { f.update(func() { f.c, f.known = k, true }) },
			changed: func() { f.update(func() {}) },
		})
		c.mu.Lock()
		delete(c.flights, ref)
		if err == nil {
			m.at = time.Now()
			for r, old := range c.made {
				if time.Since(old.at) >= chainMemo {
					delete(c.made, r)
				}
			}
			c.made[ref] = m
		}
		c.mu.Unlock()
		f.update(func() {
			f.done, f.err = true, err
			if err == nil {
				f.c, f.known = m, true
			}
		})
	}()
	return f
}

// remoteSnapshotter is the snapshots API a replica serves: the builders'
// view of its store (snapshot.Builders), whose Prepare answers the layers
// of images from the fleet (remote snapshots).
type remoteSnapshotter struct {
	*snapshot.Builders
	chains  *chains
	timeout time.Duration
	log     *slog.Logger
	// prepares counts outcomes ("remote", "fallback"); nil for none.
	prepares *prometheus.CounterVec
	// busy is the handler's: held (read) while a share reads the fleet's
	// snapshot, so that no prune removes it meanwhile.
	busy *sync.RWMutex
}

var _ snapshots.Snapshotter = (*remoteSnapshotter)(nil)

func (r *remoteSnapshotter) count(outcome string) {
	if r.prepares != nil {
		r.prepares.WithLabelValues(outcome).Inc()
	}
}

// Prepare answers a Prepare whose labels name an image layer with
// errdefs.ErrAlreadyExists once the layer is committed under the target
// name (the builder fetches nothing); any other Prepare, and one whose
// layer the fleet cannot make (in time), makes an ordinary active
// snapshot, so that the builder pulls the layer itself.
func (r *remoteSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, opt := range opts {
		if err := opt(&info); err != nil {
			return nil, err
		}
	}
	if l, ok := parseRemote(info.Labels); ok {
		err := r.remote(ctx, l, parent, info.Labels)
		if err == nil {
			r.count("remote")
			return nil, fmt.Errorf("remote snapshot %s: %w", l.Target, errdefs.ErrAlreadyExists)
		}
		r.count("fallback")
		r.log.Info("remote snapshot unavailable, the builder pulls the layer", "ref", l.Ref, "layer", l.Blob.String(), "error", err.Error())
	}
	return r.Builders.Prepare(ctx, key, parent, opts...)
}

// remote commits the layer l under l.Target on parent, from the fleet's
// snapshot on this node (made first when missing).
func (r *remoteSnapshotter) remote(ctx context.Context, l remoteLayer, parent string, labels map[string]string) error {
	if info, err := r.Stat(ctx, l.Target); err == nil {
		if info.Kind == snapshots.KindCommitted && info.Parent == parent {
			return nil
		}
		return fmt.Errorf("%s exists and is not that layer's", l.Target)
	}
	asked := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, r.timeout, errRemoteTimeout)
	defer cancel()
	c, err := r.chains.layer(ctx, l.Ref, l.Blob)
	if err != nil {
		return err
	}
	got := time.Now()
	i := slices.IndexFunc(c.Layers, func(x events.Layer) bool { return x.Blob.Digest == l.Blob })
	if i < 0 {
		return fmt.Errorf("layer %s is not one of %s's", l.Blob, l.Ref)
	}
	// The builder names its layers by chainID; a different name means a
	// different chain.
	if strings.HasPrefix(l.Target, digest.SHA256.String()+":") && l.Target != c.ChainIDs[i].String() {
		return fmt.Errorf("target %s is not the chainID %s of layer %s", l.Target, c.ChainIDs[i], l.Blob)
	}
	if err := r.checkParent(ctx, parent, c, i); err != nil {
		return err
	}
	r.busy.RLock()
	err = r.Share(ctx, snapshot.ShareRequest{ChainID: c.ChainIDs[i], Name: l.Target, Parent: parent, Labels: labels})
	r.busy.RUnlock()
	if errdefs.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		r.log.Info("remote snapshot shared", "ref", l.Ref, "layer", l.Blob.String(), "build_id", c.BuildID,
			"chain_ms", got.Sub(asked).Milliseconds(), "share_ms", time.Since(got).Milliseconds())
	}
	return err
}

// checkParent makes sure parent holds the layers below layer i: none for
// the bottom layer; otherwise the builder's snapshot of chainID i-1 (by
// name, as the builder or containerd's metadata layer names it, or shared
// from it).
func (r *remoteSnapshotter) checkParent(ctx context.Context, parent string, c chain, i int) error {
	if i == 0 {
		if parent != "" {
			return fmt.Errorf("the bottom layer asked for on parent %s", parent)
		}
		return nil
	}
	below := c.ChainIDs[i-1].String()
	info, err := r.Stat(ctx, parent)
	if err != nil {
		return fmt.Errorf("parent %s: %w", parent, err)
	}
	named := parent == below || strings.HasSuffix(parent, "/"+below) // containerd's metadata names it <ns>/<id>/<name>
	if info.Kind != snapshots.KindCommitted || (!named && info.Labels[snapshot.LabelShared] != below) {
		return fmt.Errorf("parent %s does not hold the layers below (%s)", parent, below)
	}
	return nil
}

// remoteBuilds makes images' layer chains on this node as builds on the
// bus: the replica is the build's client (source.resolve.requested for
// docker-image://<ref>, keys and CacheOpts from the puller), then makes
// the chain in its own store with the handler's code path, publishing
// progress and snapshot.ready (or snapshot.failed) on the build.
type remoteBuilds struct {
	js       jetstream.JetStream
	h        *Handler
	instance string
	log      *slog.Logger
}

var _ chainMaker = (*remoteBuilds)(nil)

func (b *remoteBuilds) makeChain(ctx context.Context, ref string, on chainWatch) (chain, error) {
	buildID := client.NewBuildID()
	log := b.log.With("build_id", buildID, "ref", ref)
	log.Info("remote snapshot build")
	start := time.Now()
	out, err := b.resolve(ctx, buildID, ref)
	if err != nil {
		return chain{}, fmt.Errorf("build %s: %w", buildID, err)
	}
	var opts *events.CacheOpts
	switch {
	case out.Miss != nil:
		opts = out.Miss.CacheOpts
	case out.Hit != nil:
		opts = out.Hit.CacheOpts
	}
	if opts == nil || len(opts.Layers) == 0 {
		return chain{}, fmt.Errorf("build %s: %s has no layers to snapshot", buildID, ref)
	}
	pub := &buildPublisher{pub: bus.NewPublisher(b.js), buildID: buildID, source: "/stevedore/" + events.ComponentSnapshotter + "/" + b.instance}
	req := events.SnapshotRequested{Source: out.Source, Keys: out.Keys, CacheOpts: opts}
	resolved := time.Now()
	on.known(chain{Layers: opts.Layers, ChainIDs: snapshot.ChainIDs(opts.Layers), BuildID: buildID})
	emit := pub.emit(ctx)
	// A layer's last progress (extracting, done) follows its commit.
	ready, err := b.make(ctx, req, func(p events.Payload) { emit(p); on.changed() })
	if err != nil {
		pub.publish(context.WithoutCancel(ctx), events.SnapshotFailed{Source: out.Source,
			Step: events.TypeSnapshotRequested, Reason: err.Error(), Code: failure.Code(err), Attempts: 1})
		return chain{}, fmt.Errorf("build %s: %w", buildID, err)
	}
	pub.publish(ctx, ready)
	log.Info("remote snapshot ready", "chain_id", ready.ChainID, "fetched", ready.Fetched,
		"resolve_ms", resolved.Sub(start).Milliseconds(), "make_ms", time.Since(resolved).Milliseconds())
	return chain{Layers: opts.Layers, ChainIDs: snapshot.ChainIDs(opts.Layers), BuildID: buildID}, nil
}

// resolve starts build buildID for ref's keys, marked as this node's
// remote snapshot (SnapshotBy), and follows it to its cache.hit or
// cache.miss; a source.failed is an error.
func (b *remoteBuilds) resolve(ctx context.Context, buildID, ref string) (client.Outcome, error) {
	req, err := client.Submit(ctx, b.js, buildID, events.SourceResolveRequested{
		Source: events.SourceOp{Identifier: "docker-image://" + ref}, SnapshotBy: b.h.node})
	if err != nil {
		return client.Outcome{}, err
	}
	var out client.Outcome
	seen := false
	err = client.Follow(ctx, b.js, buildID, false, func(e events.Event) bool {
		seen = seen || e.ID == req.ID
		if !seen {
			return true
		}
		out.Add(e)
		return out.Hit == nil && out.Miss == nil && out.Failed == nil
	})
	if err != nil {
		return out, err
	}
	return out, out.Err()
}

// make makes req's chain on this node (whatever other nodes have) and
// records it in the cache index, as Handler.Snapshot does.
func (b *remoteBuilds) make(ctx context.Context, req events.SnapshotRequested, emit func(events.Payload)) (events.SnapshotReady, error) {
	h := b.h
	h.busy.RLock()
	res, layers, locations, err := h.unpack(ctx, req, emit)
	h.busy.RUnlock()
	if err != nil {
		return events.SnapshotReady{}, err
	}
	h.count(made{result: res, layers: layers})
	where := h.placement()
	ready := events.SnapshotReady{Source: req.Source, Keys: req.Keys, Layers: layers, Node: h.node,
		ChainID: res.ChainID.String(), SnapshotKey: res.Key, Size: res.Size, Fetched: len(res.Fetched), Reused: res.Reused,
		Snapshotter: where.Snapshotter, SnapshotsDir: where.SnapshotsDir}
	digests := make([]digest.Digest, 0, len(req.Keys))
	for _, k := range req.Keys {
		digests = append(digests, k.Digest)
	}
	if len(digests) > 0 {
		err := h.index.Put(ctx, events.CacheRecord{Digests: digests, ChainID: res.ChainID, Layers: layers, Node: h.node,
			SnapshotKey: res.Key, Size: res.Size, Locations: locations, CreatedAt: h.now().UTC(),
			Snapshotter: where.Snapshotter, SnapshotsDir: where.SnapshotsDir})
		if err != nil {
			return ready, err
		}
	}
	return ready, nil
}

// buildPublisher publishes the events of a build this replica runs as its
// client.
type buildPublisher struct {
	pub     *bus.Publisher
	buildID string
	source  string
	n       atomic.Int64
}

func (p *buildPublisher) publish(ctx context.Context, payload events.Payload) {
	e := events.New(payload)
	e.BuildID = p.buildID
	e.ID = events.DeriveID(p.buildID+"-remote", payload.EventType(), int(p.n.Add(1)))
	e.Source = p.source
	e.Time = time.Now()
	_ = p.pub.Publish(ctx, e) // best effort: the snapshot matters, not its news
}

func (p *buildPublisher) emit(ctx context.Context) func(events.Payload) {
	return func(payload events.Payload) { p.publish(ctx, payload) }
}
