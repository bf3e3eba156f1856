package puller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/image"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// Sessions reads blobs from the stores of client sessions (pkg/session/store):
// the OCI layouts that oci-layout and oci-layout+blob sources name.
type Sessions interface {
	// Stat returns the size of blob d in store of session id.
	// Errors: *session.NoSessionError when the session is gone, and
	// failure.ErrNotFound, failure.ErrInvalid.
	Stat(ctx context.Context, id, store string, d digest.Digest) (int64, error)
	// ReadBlob reads a small blob whole, verified against desc, refusing
	// one larger than maxSize. Errors: Stat's, and session.ErrVerify.
	ReadBlob(ctx context.Context, id, store string, desc ocispec.Descriptor, maxSize int64) ([]byte, error)
}

var _ Sessions = (*store.Client)(nil)

// WithSessions makes the handler compute the keys of oci-layout and
// oci-layout+blob sources, reading the layouts through s. The default is
// no session reader: those schemes fail with "no handler for oci-layout".
func WithSessions(s Sessions) Option {
	return func(o *options) error {
		if s == nil {
			return errors.New("puller: WithSessions: nil sessions")
		}
		o.sessions = s
		return nil
	}
}

// errNoSessions is BuildKit's text when a source needs a client session
// and the build has none.
var errNoSessions = errors.New("no active sessions")

// maxOCIReadSize is how much of an oci-layout's top blob is read to tell
// an index from a manifest (BuildKit's maxReadSize), and the largest
// index, manifest or config the walk reads.
const maxOCIReadSize = 4 << 20

// ociKey computes the keys of an oci-layout source exactly as docker-image's
// (BuildKit runs the same code with a resolver backed by the client's
// layout): index 0 the main-manifest key of the top digest, index 1 the
// chainID. The resolve mode is always pull: the layout is read every time,
// through the session, which must be connected.
func (h *Handler) ociKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	oci := id.(*source.OCIIdentifier)
	switch in.Index {
	case 0:
		return h.ociManifestKey(ctx, oci, in)
	case 1:
		return h.configKey(ctx, in)
	}
	return nil, failure.Invalid(fmt.Errorf("oci-layout has no cache key index %d", in.Index))
}

// ociManifestKey is index 0 of oci-layout.
func (h *Handler) ociManifestKey(ctx context.Context, oci *source.OCIIdentifier, in events.CacheKeyRequested) ([]events.Event, error) {
	started := h.now()
	if err := oci.RequireDigest(); err != nil {
		return nil, err
	}
	loc, err := sessionLocation(oci.SessionID, in.Session, oci.StoreID)
	if err != nil {
		return nil, err
	}
	platform := h.platform
	if oci.Platform != nil {
		platform = *oci.Platform
	}
	ref := oci.Reference.String()

	top, data, err := h.ociTop(ctx, loc, oci)
	if err != nil {
		return nil, err
	}
	fetch := image.FetcherFunc(func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		if d.Digest == top.Digest {
			return data, nil
		}
		return h.sessions.ReadBlob(ctx, loc.Session, loc.Store, d, maxOCIReadSize)
	})
	opts, err := image.Walk(ctx, fetch, top, platform)
	if err != nil {
		return nil, err
	}
	opts.Origin = &loc
	return h.indexZero(ctx, in, opts, platform, oci.LayerLimit, "resolve "+ref, started)
}

// ociTop reads the blob the reference's digest names, up to
// maxOCIReadSize, and tells from its content whether it is an index or a
// manifest, as BuildKit's oci-layout resolver does.
func (h *Handler) ociTop(ctx context.Context, loc events.BlobLocation, oci *source.OCIIdentifier) (ocispec.Descriptor, []byte, error) {
	d := oci.Reference.Digest()
	size, err := h.sessions.Stat(ctx, loc.Session, loc.Store, d)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	top := ocispec.Descriptor{Digest: d, Size: size}
	data, err := h.sessions.ReadBlob(ctx, loc.Session, loc.Store, top, maxOCIReadSize)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if top.MediaType = detectMediaType(data); top.MediaType == "" {
		return ocispec.Descriptor{}, nil, failure.Invalid(fmt.Errorf("reference %q contains neither an index nor a manifest", oci.Reference.String()))
	}
	return top, data, nil
}

// detectMediaType is the media type of an index or manifest blob, as
// BuildKit's DetectManifestBlobMediaType tells it: its mediaType field
// when that agrees with its content, else the OCI type its fields show
// (manifests: an index; config or layers: a manifest). Unlike BuildKit it
// also wants schemaVersion 2, which every index and manifest has and an
// image config (whose "config" field would pass for a manifest's) does
// not. It is empty for anything else: not JSON, another schema version,
// both kinds of fields or neither, or a mediaType that contradicts them.
func detectMediaType(data []byte) string {
	var m struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Config        json.RawMessage `json:"config"`
		Layers        json.RawMessage `json:"layers"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(data, &m) != nil || m.SchemaVersion != 2 {
		return ""
	}
	isManifest := m.Config != nil || m.Layers != nil
	isIndex := m.Manifests != nil
	switch {
	case isManifest == isIndex:
		return ""
	case m.MediaType == "" && isIndex:
		return ocispec.MediaTypeImageIndex
	case m.MediaType == "":
		return ocispec.MediaTypeImageManifest
	case indexTypes[m.MediaType] && isIndex, manifestTypes[m.MediaType] && isManifest:
		return m.MediaType
	}
	return ""
}

// The media types of indexes and of manifests, OCI's and Docker's (schema
// 2), as containerd's images.IsIndexType and IsManifestType know them.
var (
	indexTypes    = map[string]bool{ocispec.MediaTypeImageIndex: true, "application/vnd.docker.distribution.manifest.list.v2+json": true}
	manifestTypes = map[string]bool{ocispec.MediaTypeImageManifest: true, "application/vnd.docker.distribution.manifest.v2+json": true}
)

// ociBlobKey is the one key of an oci-layout+blob source, computed without
// the network like docker-image+blob's. Its snapshot is the one file read
// from the client's layout through the session.
func (h *Handler) ociBlobKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	blob := id.(*source.ImageBlobIdentifier)
	if in.Index != 0 {
		return nil, failure.Invalid(fmt.Errorf("%s has no cache key index %d", blob.Scheme(), in.Index))
	}
	key, err := blob.CacheKey()
	if err != nil {
		return nil, err
	}
	loc, err := sessionLocation(blob.SessionID, in.Session, blob.StoreID)
	if err != nil {
		return nil, err
	}
	file := blobFile(blob)
	file.Locations = []events.BlobLocation{loc}
	ck := events.CacheKey{Index: 0, Key: key.String(), Digest: source.SolverDigest(key.String()), Pin: blob.Reference.Digest().String(), Done: true}
	return h.contentKey(ctx, in, ck, &events.Content{File: file}, nil)
}

// sessionLocation is the session store a source reads: oci.session, or,
// when the source names none, the build's session (BuildKit's "any
// session of the build"), and oci.store.
func sessionLocation(sessionID, build, store string) (events.BlobLocation, error) {
	if sessionID == "" {
		sessionID = build
	}
	if sessionID == "" {
		return events.BlobLocation{}, failure.Invalid(errNoSessions)
	}
	if err := session.ValidateID(sessionID); err != nil {
		return events.BlobLocation{}, fmt.Errorf("%s: %w", source.AttrOCILayoutSessionID, err)
	}
	return events.BlobLocation{Session: sessionID, Store: store}, nil
}
