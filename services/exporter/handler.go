package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/stevedore-dev/stevedore/pkg/blobs"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// CacheIndex is what the exporter needs from the cache index.
type CacheIndex interface {
	// Get returns the record of the key whose solver digest is d.
	Get(ctx context.Context, d digest.Digest) (events.CacheRecord, bool, error)
	// GetRecord returns the record stored under a record digest.
	GetRecord(ctx context.Context, r digest.Digest) (events.CacheRecord, bool, error)
	// PutRecord stores a record under a record digest.
	PutRecord(ctx context.Context, r digest.Digest, rec events.CacheRecord) error
}

// Registry is what the exporter needs from a registry client.
type Registry interface {
	blobs.Registry
	Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error)
	FetchManifest(ctx context.Context, ref string, desc ocispec.Descriptor) ([]byte, error)
	HasBlob(ctx context.Context, ref string, desc ocispec.Descriptor) (bool, error)
	PushBlob(ctx context.Context, ref string, desc ocispec.Descriptor, open func(ctx context.Context) (io.ReadCloser, error)) (registry.PushResult, error)
	PushManifest(ctx context.Context, ref string, desc ocispec.Descriptor, data []byte) error
}

// Builds replays a build's events (bus.Replay).
type Builds interface {
	Replay(ctx context.Context, buildID string) ([]events.Event, error)
}

// BuildsFunc adapts a function to Builds.
type BuildsFunc func(ctx context.Context, buildID string) ([]events.Event, error)

// Replay implements Builds.
func (f BuildsFunc) Replay(ctx context.Context, buildID string) ([]events.Event, error) {
	return f(ctx, buildID)
}

// Sessions is what the exporter needs of client sessions: reading blobs
// of their stores (pkg/session/store), and writing the layouts of local
// caches (pkg/session/output), which the client opens with its own rights
// and serves.
type Sessions interface {
	blobs.Sessions
	// Stat returns a blob's size; failure.ErrNotFound when the store
	// lacks it.
	Stat(ctx context.Context, id, store string, d digest.Digest) (int64, error)
	// ReadBlob reads a small blob whole, verified.
	ReadBlob(ctx context.Context, id, store string, desc ocispec.Descriptor, maxSize int64) ([]byte, error)
	// Index reads a store's index.json; failure.ErrNotFound when there is
	// no layout.
	Index(ctx context.Context, id, store string) (ocispec.Index, error)
	// Write writes a blob into an output store; the session verifies it.
	Write(ctx context.Context, id, store string, desc ocispec.Descriptor, r io.Reader) error
	// Tag tags a manifest in an output store's index.json.
	Tag(ctx context.Context, id, store string, manifest ocispec.Descriptor, tag string) error
}

// Handler exports and imports BuildKit remote caches.
type Handler struct {
	index CacheIndex
	// registries returns the client for a target or source: the shared
	// one, or one that also reaches host over plain HTTP.
	registries func(insecureHost string) (Registry, error)
	builds     Builds
	// sessions reads blobs clients serve (oci-layout sources) and writes
	// and reads the layouts of local caches through their clients'
	// sessions; nil for none.
	sessions Sessions
	window   int
}

// HandlerConfig is what a Handler works with.
type HandlerConfig struct {
	// Index is the cache index the records come from and go to.
	Index CacheIndex
	// Registries returns the client for a target or source: the shared
	// one, or one that also reaches insecureHost over plain HTTP.
	Registries func(insecureHost string) (Registry, error)
	// Builds replays the builds whose sources an export names.
	Builds Builds
	// Sessions reaches client sessions (oci-layout sources, local
	// caches); nil for none.
	Sessions Sessions
	// Window bounds the blobs one export writes at once. Zero means
	// DefaultWindow.
	Window int
}

// NewHandler returns a handler working with cfg.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	return &Handler{index: cfg.Index, registries: cfg.Registries, builds: cfg.Builds, sessions: cfg.Sessions, window: cfg.Window}
}

// BuildKit's progress vertex names of the exporters and importers.
const (
	vertexExportLocal    = "exporting cache to client directory"
	vertexExportRegistry = "exporting cache to registry"
)

// Export handles cache.export.requested.
func (h *Handler) Export(ctx context.Context, in events.CacheExportRequested) ([]events.Event, error) {
	// Before anything else, and whatever ignore-error says: a request
	// naming a session its key did not sign (another client's) never acts.
	if err := session.VerifyInput(ctx, in); err != nil {
		return nil, failure.Invalid(err)
	}
	target, err := cachefmt.ParseExportTarget(in.Target)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	out, err := h.export(ctx, in, target)
	if err != nil {
		err = ocilayout.Classify(err)
		if target.IgnoreError && failure.Permanent(err) {
			return []events.Event{events.New(events.CacheExported{Target: in.Target, Warning: err.Error()})}, nil
		}
		return nil, err
	}
	return []events.Event{events.New(out)}, nil
}

// layerSource is where the exporter reads a layer from, and what it is.
type layerSource struct {
	layer     events.Layer
	locations []events.BlobLocation
}

func (h *Handler) export(ctx context.Context, in events.CacheExportRequested, target cachefmt.ExportTarget) (events.CacheExported, error) {
	out := events.CacheExported{Target: in.Target}
	keys, err := h.keys(ctx, in)
	if err != nil {
		return out, err
	}
	chains := cachefmt.NewChains()
	sources := map[digest.Digest]layerSource{}
	for _, d := range keys {
		rec, found, err := h.index.Get(ctx, d)
		if err != nil {
			return out, failure.Unavailable(err)
		}
		if !found {
			return out, failure.NotFound(fmt.Errorf("cache key %s is not in the cache index", d))
		}
		chain := cachefmt.Chain{CreatedAt: rec.CreatedAt.UTC()}
		for _, l := range rec.Layers {
			chain.Layers = append(chain.Layers, cachefmt.LayerDescriptor(l.Blob, l.DiffID, rec.CreatedAt, target.OCIMediaTypes))
			if _, ok := sources[l.Blob.Digest]; !ok {
				sources[l.Blob.Digest] = layerSource{layer: l, locations: rec.Locations}
			}
		}
		if len(chain.Layers) == 0 {
			chains.AddRoot(cachefmt.RecordDigest(d, 0))
			continue
		}
		chains.AddRoot(cachefmt.RecordDigest(d, 0), chain)
	}
	if target.ForceCompression {
		cleanup, err := h.convert(ctx, chains, sources, target)
		defer cleanup()
		if err != nil {
			return out, err
		}
	}
	cfg, layers, err := chains.Marshal()
	if err != nil {
		return out, failure.Invalid(err)
	}
	out.Records = len(cfg.Records)
	if len(cfg.Layers) == 0 {
		out.Warning = "failed to match any cache with layers"
		emitOneOff(ctx, vertexOf(target), "skipping cache export for empty result")(nil)
		return out, nil
	}
	// Everything is checked before anything is written: a cache BuildKit
	// could not import is refused here, not discovered at the next import.
	cfgData, cfgDesc, err := cachefmt.ConfigDescriptor(cfg)
	if err != nil {
		return out, failure.Invalid(err)
	}
	mData, mDesc, err := cachefmt.BuildManifest(target.Form, target.OCIMediaTypes, layers, cfgDesc)
	if err != nil {
		return out, failure.Invalid(err)
	}
	w, err := h.writer(ctx, target, in)
	if err != nil {
		return out, err
	}
	unique := uniqueByDigest(layers)
	out.Layers = len(unique)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(h.window)
	for _, desc := range unique {
		src := sources[desc.Digest]
		g.Go(func() error {
			done := emitOneOff(gctx, vertexOf(target), "writing layer "+desc.Digest.String())
			res, err := w.blob(gctx, desc, src.locations)
			done(err)
			if err != nil {
				return fmt.Errorf("error writing layer blob %s: %w", desc.Digest, err)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case res.Existed:
				out.Existed++
			case res.Mounted:
				out.Mounted++
			default:
				out.Written++
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return out, err
	}
	done := emitOneOff(ctx, vertexOf(target), "writing config "+cfgDesc.Digest.String())
	err = w.config(ctx, cfgDesc, cfgData)
	done(err)
	if err != nil {
		return out, fmt.Errorf("error writing config blob: %w", err)
	}
	label := "writing cache manifest "
	if target.Form == cachefmt.FormImageManifest {
		label = "writing cache image manifest "
	}
	done = emitOneOff(ctx, vertexOf(target), label+mDesc.Digest.String())
	err = w.manifest(ctx, mDesc, mData)
	done(err)
	if err != nil {
		return out, fmt.Errorf("error writing manifest blob: %w", err)
	}
	out.Manifest = mDesc
	return out, nil
}

// keys are the solver digests to export: the request's, and those of its
// build's results, sorted and without repeats.
func (h *Handler) keys(ctx context.Context, in events.CacheExportRequested) ([]digest.Digest, error) {
	keys := slices.Clone(in.Keys)
	if in.Build != "" {
		evs, err := h.builds.Replay(ctx, in.Build)
		if err != nil {
			return nil, err
		}
		n := len(keys)
		for _, e := range evs {
			switch p := e.Data.(type) {
			case events.CacheHit:
				keys = append(keys, p.Key.Digest)
				keys = append(keys, p.Record.Digests...)
			case events.SnapshotReady:
				for _, k := range p.Keys {
					keys = append(keys, k.Digest)
				}
			}
		}
		if len(keys) == n {
			return nil, failure.Invalid(fmt.Errorf("build %s has no result to export (no cache.hit or snapshot.ready)", in.Build))
		}
	}
	if len(keys) == 0 {
		return nil, failure.Invalid(errors.New("nothing to export: the request names no build and no key"))
	}
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, failure.Invalid(fmt.Errorf("cache key %q: %w", k, err))
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

func uniqueByDigest(ds []ocispec.Descriptor) []ocispec.Descriptor {
	seen := map[digest.Digest]bool{}
	var out []ocispec.Descriptor
	for _, d := range ds {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d)
		}
	}
	return out
}

func vertexOf(t cachefmt.ExportTarget) string {
	if t.Type == cachefmt.TypeLocal {
		return vertexExportLocal
	}
	return vertexExportRegistry
}

// emitOneOff sends BuildKit's one-off status for id (started now), and
// returns the call that completes it.
func emitOneOff(ctx context.Context, vertex, id string) func(error) {
	started := time.Now()
	bus.Emit(ctx, events.Progress{Vertex: vertex, ID: id, Started: &started})
	return func(err error) {
		completed := time.Now()
		p := events.Progress{Vertex: vertex, ID: id, Action: "done", Started: &started, Completed: &completed}
		if err != nil {
			p.Action, p.Error = "error", err.Error()
		}
		bus.Emit(ctx, p)
	}
}

// Import handles cache.import.requested.
func (h *Handler) Import(ctx context.Context, in events.CacheImportRequested) ([]events.Event, error) {
	if err := session.VerifyInput(ctx, in); err != nil {
		return nil, failure.Invalid(err)
	}
	src, err := cachefmt.ParseImportSource(in.Source)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	out, err := h.importCache(ctx, in, src)
	if err != nil {
		return nil, ocilayout.Classify(err)
	}
	return []events.Event{events.New(out)}, nil
}

// reader is an import source: where its blobs are, how to read its top
// blob and small blobs, and whether it has a blob.
type reader interface {
	location() events.BlobLocation
	top(ctx context.Context) (ocispec.Descriptor, error)
	read(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)
	has(ctx context.Context, desc ocispec.Descriptor) (bool, error)
}

func (h *Handler) importCache(ctx context.Context, in events.CacheImportRequested, src cachefmt.ImportSource) (events.CacheImported, error) {
	out := events.CacheImported{Source: in.Source}
	vertex := "importing cache manifest from " + src.Location()
	r, err := h.reader(src, in)
	if errors.Is(err, ocilayout.ErrNotFound) {
		// BuildKit skips a missing local cache with a warning.
		out.Warning = fmt.Sprintf("local cache import at %s not found due to err: %v", src.Src, err)
		emitOneOff(ctx, vertex, out.Warning)(nil)
		return out, nil
	}
	if err != nil {
		return out, err
	}
	done := emitOneOff(ctx, vertex, vertex)
	top, err := r.top(ctx)
	if (errors.Is(err, ocilayout.ErrNotFound) || missing(err)) && src.Type == cachefmt.TypeLocal {
		out.Warning = fmt.Sprintf("local cache import at %s not found due to err: %v", src.Src, err)
		done(nil)
		return out, nil
	}
	if err != nil {
		done(err)
		return out, err
	}
	out.Manifest = top
	if err := cachefmt.CheckSize(top); err != nil {
		done(err)
		return out, failure.Invalid(err)
	}
	data, err := r.read(ctx, top)
	if err != nil {
		done(err)
		return out, err
	}
	m, err := cachefmt.ReadManifest(data)
	if err != nil {
		done(err)
		return out, failure.Invalid(err)
	}
	out.MediaType = m.MediaType
	emitOneOff(ctx, vertex, "inferred cache manifest type: "+m.MediaType)(nil)
	chains, err := h.parse(ctx, r, m)
	if err != nil {
		done(err)
		return out, err
	}
	out.Dropped = chains.Dropped()
	// Every blob a result names must be there: a cache that points at
	// missing blobs is refused now rather than failing a pull later.
	checked := map[digest.Digest]bool{}
	for _, it := range chains.Items() {
		for _, res := range it.Results {
			for _, l := range res.Layers {
				if checked[l.Digest] {
					continue
				}
				checked[l.Digest] = true
				ok, err := r.has(ctx, l)
				if err != nil {
					done(err)
					return out, err
				}
				if !ok {
					err := failure.Invalid(fmt.Errorf("cache manifest %s lists blob %s, which %s does not have", top.Digest, l.Digest, r.location()))
					done(err)
					return out, err
				}
			}
		}
	}
	records, dropped, err := h.store(ctx, chains, r.location(), in.Source)
	if err != nil {
		done(err)
		return out, err
	}
	out.Records, out.Dropped = records, out.Dropped+dropped
	done(nil)
	return out, nil
}

// parse reads the cache config (or, for an image with an inline cache,
// its records) into chains.
func (h *Handler) parse(ctx context.Context, r reader, m cachefmt.Manifest) (*cachefmt.Chains, error) {
	if m.Form == cachefmt.FormInline {
		cfgData, err := r.read(ctx, m.Config)
		if err != nil {
			return nil, err
		}
		cfg, layers, found, err := cachefmt.InlineConfig(cfgData, m)
		if err != nil {
			return nil, failure.Invalid(err)
		}
		if !found {
			return nil, failure.Invalid(fmt.Errorf("%s holds an image without an inline cache, not a cache", r.location()))
		}
		chains, err := cachefmt.Parse(cfg, cachefmt.Manifest{Layers: layers}.Blobs())
		if err != nil {
			return nil, failure.Invalid(err)
		}
		return chains, nil
	}
	if err := cachefmt.CheckSize(m.Config); err != nil {
		return nil, failure.Invalid(err)
	}
	cfgData, err := r.read(ctx, m.Config)
	if err != nil {
		return nil, err
	}
	chains, err := cachefmt.ParseConfig(cfgData, m.Blobs())
	if err != nil {
		return nil, failure.Invalid(err)
	}
	return chains, nil
}

// store puts the records of chains into the cache index: every record with
// a result under its own digest, and, beyond BuildKit, every prefix of
// every result chain under the record digest of the index-1 key it stands
// for (the chainID of its diffIDs), so that a base image hits even when the
// cache's roots are bare. A record a node holds a snapshot for is never
// replaced by a lazy one. Each record names the import it came from
// (imported: the request's source). It returns the record digests
// written, sorted, and the count of results it could not use (a layer
// without a diffID).
func (h *Handler) store(ctx context.Context, chains *cachefmt.Chains, loc events.BlobLocation, imported string) ([]digest.Digest, int, error) {
	wanted := map[digest.Digest]events.CacheRecord{}
	dropped := 0
	for _, it := range chains.Items() {
		for i, res := range it.Results {
			layers, ok := toLayers(res.Layers)
			if !ok {
				dropped++
				continue
			}
			mk := func(n int) events.CacheRecord {
				return events.CacheRecord{ChainID: chainID(layers[:n]), Layers: layers[:n], Locations: []events.BlobLocation{loc}, CreatedAt: res.CreatedAt, Import: imported}
			}
			if best, _ := it.Best(); i == slices.IndexFunc(it.Results, func(c cachefmt.Chain) bool { return c.CreatedAt.Equal(best.CreatedAt) }) {
				wanted[it.Digest] = mk(len(layers))
			}
			for n := 1; n <= len(layers); n++ {
				rec := mk(n)
				sd := source.SolverDigest(rec.ChainID.String())
				rec.Digests = []digest.Digest{sd}
				rd := cachefmt.RecordDigest(sd, 0)
				if have, ok := wanted[rd]; !ok || have.CreatedAt.Before(rec.CreatedAt) {
					wanted[rd] = rec
				}
			}
		}
	}
	var written []digest.Digest
	for rd, rec := range wanted {
		have, found, err := h.index.GetRecord(ctx, rd)
		if err != nil {
			return nil, 0, failure.Unavailable(err)
		}
		if found && !have.Lazy() {
			continue
		}
		if err := h.index.PutRecord(ctx, rd, rec); err != nil {
			return nil, 0, failure.Unavailable(err)
		}
		written = append(written, rd)
	}
	sort.Slice(written, func(i, j int) bool { return written[i] < written[j] })
	return written, dropped, nil
}

// toLayers turns a chain's descriptors into layers; false when one has no
// diffID annotation (it could not be unpacked or keyed).
func toLayers(ds []ocispec.Descriptor) ([]events.Layer, bool) {
	out := make([]events.Layer, 0, len(ds))
	for _, d := range ds {
		diffID := cachefmt.DiffID(d)
		if diffID == "" {
			return nil, false
		}
		out = append(out, events.Layer{Blob: d, DiffID: diffID})
	}
	return out, true
}

func chainID(layers []events.Layer) digest.Digest {
	diffIDs := make([]digest.Digest, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.DiffID
	}
	return source.ConfigKey(diffIDs)
}
