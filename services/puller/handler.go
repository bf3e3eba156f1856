package puller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/containerd/platforms"
	lru "github.com/hashicorp/golang-lru/v2"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/image"
	"github.com/stevedore-dev/stevedore/pkg/lease"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Registry is what the puller needs from a registry client.
type Registry interface {
	// Resolve returns the top-level descriptor of ref (HEAD, or GET).
	Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error)
	// FetchManifest reads an index, manifest or config of ref's repository.
	FetchManifest(ctx context.Context, ref string, desc ocispec.Descriptor) ([]byte, error)
}

// Flight runs a piece of work once across the fleet (see lease.Flight).
type Flight interface {
	Do(ctx context.Context, key string, accept func([]byte) bool, work func(context.Context) ([]byte, error)) (lease.Result, error)
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Update(ctx context.Context, key string, change func(old []byte, found bool) ([]byte, error)) error
	Refresh(ctx context.Context, key string, work func(context.Context) ([]byte, error)) error
}

// CacheIndex looks keys up.
type CacheIndex interface {
	Get(ctx context.Context, d digest.Digest) (events.CacheRecord, bool, error)
}

// keyFunc computes the key of one index for one scheme.
type keyFunc func(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error)

// Handler computes cache keys. For docker-image: index 0 resolves the
// reference, reads index, manifest and config (never layers) once across
// the fleet, and answers with the main-manifest key; index 1 computes the
// chainID of the diff_ids from the CacheOpts it is given, with no network.
// docker-image+blob (blob.go) and, with WithHTTP, http and https (http.go)
// have one key, index 0, and a snapshot of one file. With WithSessions,
// oci-layout has docker-image's two keys, its manifests read from a
// client's layout through a session, and oci-layout+blob one key (oci.go).
type Handler struct {
	manager  *source.Manager[keyFunc]
	registry Registry
	flight   Flight
	index    CacheIndex
	platform ocispec.Platform
	now      func() time.Time
	// httpShared holds what http sources served, for the fleet (a Flight
	// over events.BucketHTTP); nil when http is not handled.
	httpShared Flight
	// httpClient sends the requests of http sources.
	httpClient HTTPClient
	// sessions reads the layouts of oci-layout sources from client
	// sessions (oci.go); nil when they are not handled.
	sessions Sessions
	// secrets reads the credentials of git and http sources from client
	// sessions (auth.go); nil reads none: every request goes without.
	secrets Secrets
	// git lists git remotes (git.go).
	git GitLister
	// tagMaxAge is how long the fleet's resolution of a tag answers
	// without the registry; zero asks the registry every time.
	tagMaxAge time.Duration
	// tagRevalidate is how long past tagMaxAge a resolution still answers
	// at once while one replica revalidates it.
	tagRevalidate time.Duration
	// revalidating holds the tag keys this replica revalidates now.
	revalidating sync.Map
	// background runs the revalidations.
	background sync.WaitGroup
	// lineage keeps what the fleet made records of, per image, to
	// explain a miss (explain.go).
	lineage *lineage.Store
	// walked remembers CacheOpts this replica has seen. They are keyed by
	// repository, top-level digest and platform, so they never change: a
	// warm resolve skips the bucket round trip.
	walked *lru.Cache[string, events.CacheOpts]
	// downloads keeps downloads of http sources for the snapshotter
	// (WithDownloads); nil keeps none.
	downloads *downloads
}

// walkedCacheSize bounds the replica's memory of resolved manifests.
const walkedCacheSize = 4096

// Option configures a Handler.
type Option func(*options) error

type options struct {
	tagMaxAge     time.Duration
	tagRevalidate time.Duration
	httpShared    Flight
	httpClient    HTTPClient
	sessions      Sessions
	secrets       Secrets
	downloads     *downloads
}

// WithHTTP makes the handler compute the keys of http and https sources,
// sharing what each URL served through shared, a Flight over
// events.BucketHTTP that every replica uses. The default is no http
// handler: those schemes fail with "no handler for http".
func WithHTTP(shared Flight) Option {
	return func(o *options) error {
		if shared == nil {
			return errors.New("puller: WithHTTP: nil flight")
		}
		o.httpShared = shared
		return nil
	}
}

// WithHTTPClient sets the client of http sources. It needs WithHTTP. The
// default is a client with the environment's proxy settings and a 30s bound
// on the wait for response headers.
func WithHTTPClient(c HTTPClient) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("puller: WithHTTPClient: nil client")
		}
		o.httpClient = c
		return nil
	}
}

// WithTagFreshness lets the fleet's resolution of a tag answer for maxAge
// without asking the registry (image.resolvemode=default only: pull
// always asks, local takes any), and, for revalidate past that, answer at
// once while one replica of the fleet asks the registry again in the
// background. The default is 0 and 0: the registry is asked for every
// request, as BuildKit does.
func WithTagFreshness(maxAge, revalidate time.Duration) Option {
	return func(o *options) error {
		if maxAge < 0 || revalidate < 0 {
			return errors.New("puller: WithTagFreshness: negative duration")
		}
		if maxAge == 0 && revalidate > 0 {
			return errors.New("puller: WithTagFreshness: a revalidate window needs a max age")
		}
		o.tagMaxAge, o.tagRevalidate = maxAge, revalidate
		return nil
	}
}

func makeOptions(opts []Option) (options, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	if o.httpClient != nil && o.httpShared == nil {
		return o, errors.New("puller: WithHTTPClient without WithHTTP")
	}
	if o.httpClient == nil {
		o.httpClient = newHTTPClient()
	}
	if o.secrets == nil {
		o.secrets = secret.Sessionless{}
	}
	return o, nil
}

// NewHandler returns a Handler. platform is used for sources that name
// none (the resolver normally fills it in).
func NewHandler(reg Registry, flight Flight, index CacheIndex, platform ocispec.Platform, opts ...Option) (*Handler, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		manager:       source.NewManager[keyFunc](),
		registry:      reg,
		flight:        flight,
		index:         index,
		platform:      platforms.Normalize(platform),
		now:           time.Now,
		tagMaxAge:     o.tagMaxAge,
		tagRevalidate: o.tagRevalidate,
		httpShared:    o.httpShared,
		httpClient:    o.httpClient,
		sessions:      o.sessions,
		secrets:       o.secrets,
		downloads:     o.downloads,
	}
	h.lineage = lineage.NewStore(flight)
	h.walked, _ = lru.New[string, events.CacheOpts](walkedCacheSize)
	h.manager.Register(h.imageKey, source.SchemeDockerImage)
	h.manager.Register(h.blobKey, source.SchemeDockerImageBlob)
	h.manager.Register(h.localKey, source.SchemeLocal)
	h.registerGit()
	if h.httpShared != nil {
		h.manager.Register(h.httpKey, source.SchemeHTTP, source.SchemeHTTPS)
	}
	if h.sessions != nil {
		h.manager.Register(h.ociKey, source.SchemeOCILayout)
		h.manager.Register(h.ociBlobKey, source.SchemeOCILayoutBlob)
	}
	return h, nil
}

// CacheKey handles cachekey.requested.
func (h *Handler) CacheKey(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
	id, err := h.manager.Identifier(in.Source)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	fn, err := h.manager.Resolve(id)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	out, err := fn(ctx, id, in)
	if err != nil {
		return out, err
	}
	if err := checkContent(id.Scheme(), out); err != nil {
		return nil, err
	}
	return out, nil
}

func (h *Handler) imageKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	img := id.(*source.ImageIdentifier)
	switch in.Index {
	case 0:
		return h.manifestKey(ctx, img, in)
	case 1:
		return h.configKey(ctx, in)
	}
	return nil, failure.Invalid(fmt.Errorf("docker-image has no cache key index %d", in.Index))
}

// manifestKey is index 0.
func (h *Handler) manifestKey(ctx context.Context, img *source.ImageIdentifier, in events.CacheKeyRequested) ([]events.Event, error) {
	started := h.now()
	platform := h.platform
	if img.Platform != nil {
		platform = *img.Platform
	}
	ref := img.Reference.String()
	requestedAt := started
	if env, ok := bus.Input(ctx); ok && !env.Time.IsZero() {
		requestedAt = env.Time
	}

	resolved, err := h.resolveTop(ctx, img, requestedAt)
	if err != nil {
		return nil, err
	}
	top := resolved.Top
	if img.Checksum != "" && top.Digest != img.Checksum {
		return nil, failure.Invalid(fmt.Errorf("image digest %s for %s does not match expected checksum %s", top.Digest, ref, img.Checksum))
	}
	opts, err := h.manifests(ctx, img, top, platform)
	if err != nil {
		return nil, err
	}
	opts.Ref = pinnedRef(img, opts.Top.Digest)
	outs, err := h.indexZero(ctx, in, opts, platform, img.LayerLimit, "resolve "+ref, started)
	if err != nil || resolved.Stale == "" {
		return outs, err
	}
	return markStale(in.Source.Identifier, ref, resolved.Stale, h.now(), outs), nil
}

// indexZero ends index 0 of an image (docker-image, oci-layout) once its
// walk is known: BuildKit's layer limit, the main-manifest key and its
// lookup, then the hit, or the miss and the request for index 1 carrying
// opts. progressID names the resolve, which started at started.
func (h *Handler) indexZero(ctx context.Context, in events.CacheKeyRequested, opts events.CacheOpts, platform ocispec.Platform, limit *int, progressID string, started time.Time) ([]events.Event, error) {
	if limit != nil {
		if *limit > len(opts.Layers) {
			return nil, failure.Invalid(fmt.Errorf("layer limit %d is greater than the number of layers in the image %d", *limit, len(opts.Layers)))
		}
		opts.Layers = opts.Layers[:*limit]
		opts.LayerLimit = limit
	}
	key := source.MainManifestKey(opts.Top.Digest, platform, limit)
	ck := events.CacheKey{Index: 0, Key: key.String(), Digest: source.SolverDigest(key.String()), Pin: opts.Top.Digest.String()}
	completed := h.now()
	progress := events.New(events.Progress{Vertex: in.Source.Identifier, ID: progressID, Action: "done",
		Started: &started, Completed: &completed})

	rec, found, err := h.index.Get(ctx, ck.Digest)
	if err != nil {
		return nil, failure.Unavailable(err)
	}
	if found && answers(rec, &opts) {
		// A lazy record gets its snapshot made under both keys.
		keys := []events.CacheKey{ck}
		if in.Snapshot && rec.Lazy() {
			keys = append(keys, indexOneKey(&opts, ck))
		}
		return append([]events.Event{progress}, hitEvents(in, ck, rec, &opts, keys)...), nil
	}
	return []events.Event{
		progress,
		events.New(events.CacheKeyComputed{Source: in.Source, Key: ck, CacheOpts: &opts}),
		events.New(events.CacheKeyRequested{Source: in.Source, Index: 1, Keys: []events.CacheKey{ck}, CacheOpts: &opts, Snapshot: in.Snapshot, Session: in.Session}),
	}, nil
}

// configKey is index 1: everything it needs travels in the request.
func (h *Handler) configKey(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
	opts := in.CacheOpts
	if opts == nil || len(in.Keys) == 0 {
		return nil, failure.Invalid(errors.New("cachekey.requested for index 1 carries no cacheOpts or no index-0 key"))
	}
	ck := indexOneKey(opts, in.Keys[0])
	rec, found, err := h.index.Get(ctx, ck.Digest)
	if err != nil {
		return nil, failure.Unavailable(err)
	}
	keys := append(append([]events.CacheKey(nil), in.Keys...), ck)
	if found && answers(rec, opts) {
		return hitEvents(in, ck, rec, opts, keys), nil
	}
	out := []events.Event{
		events.New(events.CacheKeyComputed{Source: in.Source, Key: ck, CacheOpts: opts}),
		events.New(events.CacheMiss{Source: in.Source, Keys: keys, CacheOpts: opts, Explanation: h.explainMiss(ctx, in, opts, keys)}),
	}
	if in.Snapshot {
		out = append(out, events.New(events.SnapshotRequested{Source: in.Source, Keys: keys, CacheOpts: opts, Session: in.Session}))
	}
	return out, nil
}

// indexOneKey is the index-1 key of an image: the chainID of its diff_ids,
// or, as in BuildKit, the manifest key again when the config has no layers
// to chain.
func indexOneKey(opts *events.CacheOpts, key0 events.CacheKey) events.CacheKey {
	key := key0.Key
	if opts.RootFSType == "layers" && len(opts.Layers) > 0 {
		diffIDs := make([]digest.Digest, len(opts.Layers))
		for i, l := range opts.Layers {
			diffIDs[i] = l.DiffID
		}
		key = source.ConfigKey(diffIDs).String()
	}
	return events.CacheKey{Index: 1, Key: key, Digest: source.SolverDigest(key), Pin: key0.Pin, Done: true}
}

// answers reports whether rec may answer a key of the image opts
// describes. A record a snapshotter wrote holds the image's content. A lazy
// record (an imported cache's: blobs, no snapshot) only claims it, and any
// client may import a cache: it answers only when its layers' diffIDs are
// the image's own diff_ids (which the snapshotter verifies as it unpacks),
// so that no import can make another client's build hit a record naming
// other layers. A record that does not answer is a miss.
func answers(rec events.CacheRecord, opts *events.CacheOpts) bool {
	return !rec.Lazy() || sameDiffIDs(rec.Layers, opts.Layers)
}

// hitEvents answers a key found in the cache index: cache.hit, and when
// the client wants the content and the record is lazy (an imported cache:
// blobs, no snapshot), a snapshot.requested for keys that reads the
// cache's blobs first. A source that is not an image (opts nil) never
// gets that snapshot: its hit ends the build, and contentKey sends the
// records it cannot use down the miss path instead.
func hitEvents(in events.CacheKeyRequested, ck events.CacheKey, rec events.CacheRecord, opts *events.CacheOpts, keys []events.CacheKey) []events.Event {
	hit := events.CacheHit{Source: in.Source, Key: ck, Record: rec, CacheOpts: opts}
	if opts == nil || !in.Snapshot || !rec.Lazy() || !sameDiffIDs(rec.Layers, opts.Layers) {
		return []events.Event{events.New(hit)}
	}
	hit.Snapshot = true
	withCache := *opts
	withCache.Cached = &events.CachedResult{Layers: rec.Layers, Locations: rec.Locations}
	return []events.Event{
		events.New(hit),
		events.New(events.SnapshotRequested{Source: in.Source, Keys: keys, CacheOpts: &withCache, Session: in.Session}),
	}
}

// contentKey looks up the one, final key of a source whose snapshot is
// content (a file, a checkout) rather than layers. A record that names the
// node and snapshot holding it ends the build with cache.hit. Anything
// else is a miss: cachekey.computed and cache.miss, and, when the client
// wants the content, a snapshot.requested for content, recorded under ck.
// That includes a record without a node or a snapshot (lazy, as an
// imported cache's would be): it names no content that could be read.
// The miss is explained with sight (nil: the scheme keeps no sightings).
func (h *Handler) contentKey(ctx context.Context, in events.CacheKeyRequested, ck events.CacheKey, content *events.Content, sight *sighted) ([]events.Event, error) {
	rec, found, err := h.index.Get(ctx, ck.Digest)
	if err != nil {
		return nil, failure.Unavailable(err)
	}
	keys := []events.CacheKey{ck}
	if found && rec.Node != "" && rec.SnapshotKey != "" {
		return hitEvents(in, ck, rec, nil, keys), nil
	}
	miss := events.CacheMiss{Source: in.Source, Keys: keys}
	if sight != nil {
		miss.Explanation = h.explain(ctx, in, *sight, keys)
	}
	out := []events.Event{
		events.New(events.CacheKeyComputed{Source: in.Source, Key: ck}),
		events.New(miss),
	}
	if in.Snapshot {
		out = append(out, events.New(events.SnapshotRequested{Source: in.Source, Keys: keys, Content: content, Session: in.Session}))
	}
	return out, nil
}

func sameDiffIDs(a, b []events.Layer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].DiffID != b[i].DiffID {
			return false
		}
	}
	return true
}

// tagResolution is what the fleet stores for a tag: the descriptor it
// pointed at and when the registry was asked.
type tagResolution struct {
	Top        ocispec.Descriptor `json:"top"`
	ResolvedAt time.Time          `json:"resolvedAt"`
}

// resolveTop returns the top-level descriptor of the reference. A digest
// reference needs no registry request (its media type comes with the
// manifest walk). A tag follows the resolve mode: pull asks the registry,
// local takes the fleet's last answer when there is one, and default
// uses the fleet's memory of the tag (fresh, stale: see freshTag), asks
// the registry otherwise, and falls back to the last known answer when it
// is down. The registry is asked once for all requests made before the
// asking started.
func (h *Handler) resolveTop(ctx context.Context, img *source.ImageIdentifier, requestedAt time.Time) (topResolution, error) {
	if d := img.Reference.Digest(); d != "" {
		return topResolution{Top: ocispec.Descriptor{Digest: d}}, nil
	}
	ref := img.Reference.String()
	key := flightKey("tag", ref)
	if f := h.freshness(img); img.ResolveMode == source.ResolveModeDefault && f.maxAge > 0 {
		if a, ok := h.freshTag(ctx, ref, key, requestedAt, f); ok {
			return a, nil
		}
	}
	accept := func(v []byte) bool {
		var r tagResolution
		if json.Unmarshal(v, &r) != nil {
			return false
		}
		return img.ResolveMode == source.ResolveModePreferLocal || !r.ResolvedAt.Before(requestedAt)
	}
	res, err := h.flight.Do(ctx, key, accept, h.askRegistry(ref))
	// A registry that is down (unavailable, or unreachable: refusing
	// connections) leaves the last answer; one that said no does not.
	var stale error
	if err != nil && img.ResolveMode == source.ResolveModeDefault &&
		(!failure.Permanent(err) || errors.Is(err, failure.ErrUnreachable)) {
		if v, found, gerr := h.flight.Get(ctx, key); gerr == nil && found {
			res, err, stale = lease.Result{Value: v}, nil, err
		}
	}
	if err != nil {
		return topResolution{}, err
	}
	var r tagResolution
	if err := json.Unmarshal(res.Value, &r); err != nil {
		return topResolution{}, fmt.Errorf("stored resolution of %s: %w", ref, err)
	}
	out := topResolution{Top: r.Top}
	if stale != nil {
		out.Stale = fmt.Sprintf("the registry did not answer (%v); using the resolution of %s", stale, r.ResolvedAt.UTC().Format(time.RFC3339))
	}
	return out, nil
}

// askRegistry is the work of a tag's resolution: the registry's answer,
// stamped with when it was asked.
func (h *Handler) askRegistry(ref string) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		at := h.now()
		desc, err := h.registry.Resolve(ctx, ref)
		if err != nil {
			return nil, err
		}
		return json.Marshal(tagResolution{Top: desc, ResolvedAt: at})
	}
}

// tagFreshness is how old the fleet's memory of a tag may be to answer
// one request.
type tagFreshness struct {
	// maxAge is how old a resolution answers as it is; 0 asks the
	// registry.
	maxAge time.Duration
	// revalidate is how long past maxAge it still answers, stale, while
	// the fleet revalidates it.
	revalidate time.Duration
}

// freshness is the fleet's tag freshness, or the request's
// (image.tagmaxage) when that is fresher. A request can only ask for
// fresher answers than the fleet allows, never staler, so one client
// never changes what another is answered; and one that asks for fresher
// answers than the fleet's has no stale window: past its max age it asks
// the registry (an outage still answers the last digest, saying so).
func (h *Handler) freshness(img *source.ImageIdentifier) tagFreshness {
	f := tagFreshness{maxAge: h.tagMaxAge, revalidate: h.tagRevalidate}
	if img.TagMaxAge != nil && *img.TagMaxAge < f.maxAge {
		f = tagFreshness{maxAge: *img.TagMaxAge}
	}
	return f
}

// freshTag answers a tag from the fleet's memory without asking the
// registry: a resolution made at most f.maxAge before the request is
// fresh, and answers as it is; one older, but within f.revalidate past the
// max age, is stale: it answers at once, saying so, and one replica of the
// fleet (the one holding the tag's lease) asks the registry again in the
// background. ok is false when the memory has no answer (none, unreadable,
// too old, or the bucket failed): the caller asks the registry.
func (h *Handler) freshTag(ctx context.Context, ref, key string, requestedAt time.Time, f tagFreshness) (a topResolution, ok bool) {
	v, found, err := h.flight.Get(ctx, key)
	if err != nil || !found {
		return a, false
	}
	var r tagResolution
	if json.Unmarshal(v, &r) != nil {
		return a, false
	}
	age := requestedAt.Sub(r.ResolvedAt)
	switch {
	case age <= f.maxAge:
		return topResolution{Top: r.Top}, true
	case age <= f.maxAge+f.revalidate:
		h.revalidateTag(ctx, ref, key, r.ResolvedAt)
		return topResolution{Top: r.Top, Stale: fmt.Sprintf("past the tag max age (%s); using the resolution of %s while the fleet revalidates it",
			f.maxAge, r.ResolvedAt.UTC().Format(time.RFC3339))}, true
	}
	return a, false
}

// revalidateTag asks the registry for ref in the background, once per
// replica at a time and, through the tag's lease, once for the fleet: a
// replica that finds the lease held leaves it to its holder. A failure
// keeps the stale answer until the window closes; the requests after that
// ask the registry themselves (and fall back on an outage). seen is when
// the stale resolution was made: a replica that takes the lease after
// another let it go (it noticed the stale answer while that one asked)
// finds a newer resolution stored, and leaves it.
func (h *Handler) revalidateTag(ctx context.Context, ref, key string, seen time.Time) {
	if _, busy := h.revalidating.LoadOrStore(key, struct{}{}); busy {
		return
	}
	h.background.Go(func() {
		defer h.revalidating.Delete(key)
		// The revalidation belongs to the fleet, not to the request that
		// noticed the stale answer: it outlives it, bounded.
		bctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), tagRevalidateTimeout,
			fmt.Errorf("revalidating %s took longer than %s", ref, tagRevalidateTimeout))
		defer cancel()
		ask := h.askRegistry(ref)
		_ = h.flight.Refresh(bctx, key, func(ctx context.Context) ([]byte, error) {
			if v, found, err := h.flight.Get(ctx, key); err == nil && found {
				var r tagResolution
				if json.Unmarshal(v, &r) == nil && r.ResolvedAt.After(seen) {
					return nil, errRevalidated
				}
			}
			return ask(ctx)
		})
	})
}

// errRevalidated ends a revalidation that finds the tag revalidated since
// it was seen stale: nothing is stored.
var errRevalidated = errors.New("revalidated meanwhile")

// tagRevalidateTimeout bounds a background revalidation of a tag.
const tagRevalidateTimeout = 30 * time.Second

// manifests returns the CacheOpts of (repository, top digest, platform),
// walking the image once across the fleet; the result is immutable, so any
// stored one is good.
func (h *Handler) manifests(ctx context.Context, img *source.ImageIdentifier, top ocispec.Descriptor, platform ocispec.Platform) (events.CacheOpts, error) {
	ref := img.Reference.String()
	key := flightKey("manifest", img.Reference.Locator, top.Digest.String(), platforms.FormatAll(platform))
	if opts, ok := h.walked.Get(key); ok {
		return opts, nil
	}
	res, err := h.flight.Do(ctx, key, nil, func(ctx context.Context) ([]byte, error) {
		if top.MediaType == "" {
			desc, err := h.registry.Resolve(ctx, ref)
			if err != nil {
				return nil, err
			}
			top = desc
		}
		opts, err := image.Walk(ctx, image.FetcherFunc(func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
			return h.registry.FetchManifest(ctx, ref, d)
		}), top, platform)
		if err != nil {
			return nil, err
		}
		return json.Marshal(opts)
	})
	if err != nil {
		return events.CacheOpts{}, err
	}
	var opts events.CacheOpts
	if err := json.Unmarshal(res.Value, &opts); err != nil {
		return events.CacheOpts{}, fmt.Errorf("stored manifests of %s: %w", ref, err)
	}
	h.walked.Add(key, opts)
	return opts, nil
}

// pinnedRef is the reference with the digest it resolved to, from which any
// replica can fetch blobs later: host/repo[:tag]@digest. (A reference's
// Object is "tag", "@digest" or "tag@digest".)
func pinnedRef(img *source.ImageIdentifier, top digest.Digest) string {
	name := img.Reference.Locator
	if tag, _, _ := strings.Cut(img.Reference.Object, "@"); tag != "" {
		name += ":" + tag
	}
	return name + "@" + top.String()
}

// flightKey is a KV key for a piece of shared work: kind plus a hash of its
// inputs (KV keys cannot hold every character a reference can).
func flightKey(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return kind + "." + hex.EncodeToString(h.Sum(nil))
}

var _ Registry = (*registry.Client)(nil)
