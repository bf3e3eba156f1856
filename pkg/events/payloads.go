package events

import (
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// SourceOp names a source the way BuildKit's LLB does: an identifier, its
// attributes and a platform. It is the parse boundary: services turn it into
// a typed identifier with package source and never pass the attribute map
// further than that.
type SourceOp struct {
	// Identifier is "<scheme>://<rest>", for example
	// "docker-image://docker.io/library/alpine:3.20". Clients normalise image
	// references before sending (alpine becomes docker.io/library/alpine:latest);
	// the resolver, like BuildKit's daemon, does not.
	Identifier string `json:"identifier"`
	// Attrs holds BuildKit's attribute keys for the scheme
	// ("image.resolvemode", "image.layerlimit", "git.keepgitdir", …), all
	// string-valued. Keys a scheme does not know are ignored, as in BuildKit.
	Attrs map[string]string `json:"attrs,omitempty"`
	// Platform is the platform the source is wanted for. Nil means the
	// platform of the service that resolves it; the resolver fills it in, so
	// every later event carries an explicit platform.
	Platform *ocispec.Platform `json:"platform,omitempty"`
}

// CacheKey is one key a source handler computed for one index of BuildKit's
// CacheMap loop.
type CacheKey struct {
	// Index is the CacheMap index: 0 for the first key, 1 for the next.
	Index int `json:"index"`
	// Key is the handler's key. For docker-image, index 0 is the digest of the
	// main-manifest JSON and index 1 the chainID of the config's diff_ids.
	Key string `json:"key"`
	// Digest is the solver-side digest of Key,
	// sha256("buildkit.source.v0:" + Key): what BuildKit stores and exports.
	Digest digest.Digest `json:"digest"`
	// Pin is the content the key is pinned to; for images, the top-level
	// (index or manifest) digest the reference resolved to.
	Pin string `json:"pin"`
	// Done reports that no further index will be asked for.
	Done bool `json:"done"`
	// Stale, when set, says that Pin is the tag's last known resolution,
	// used because the registry could not be asked: when that resolution
	// was made and why the registry did not answer.
	Stale string `json:"stale,omitempty"`
}

// Layer is one layer of an image: its compressed blob and what it unpacks to.
type Layer struct {
	// Blob is the layer's descriptor as the manifest lists it (media type,
	// compressed digest, size, URLs, annotations).
	Blob ocispec.Descriptor `json:"blob"`
	// DiffID is the digest of the uncompressed layer, from the config's
	// rootfs.diff_ids.
	DiffID digest.Digest `json:"diffID"`
}

// CacheOpts is everything a later step needs about a resolved image so that
// it never fetches the manifest again: BuildKit's in-memory CacheOpts, made
// explicit and carried in events.
type CacheOpts struct {
	// Ref is the reference the blobs can be fetched from, with the digest the
	// tag resolved to (host/repo:tag@sha256:…); empty when Origin says
	// where they are.
	Ref string `json:"ref"`
	// Origin, when set, is where the blobs are instead of a registry: a
	// client session's store for oci-layout (Ref is then empty). Nil means
	// the registry Ref names.
	Origin *BlobLocation `json:"origin,omitempty"`
	// Top is the descriptor the reference resolved to: an index or a manifest.
	Top ocispec.Descriptor `json:"top"`
	// Manifest is the platform's manifest (equal to Top for a single manifest).
	Manifest ocispec.Descriptor `json:"manifest"`
	// Config is the image config blob.
	Config ocispec.Descriptor `json:"config"`
	// RootFSType is the config's rootfs.type; only "layers" gives an index-1 key.
	RootFSType string `json:"rootfsType,omitempty"`
	// Layers are the image's layers, bottom first, already cut to LayerLimit.
	Layers []Layer `json:"layers"`
	// Platform is the platform the manifest was chosen for.
	Platform ocispec.Platform `json:"platform"`
	// ImagePlatform is the platform the image's config names, set only
	// when it does not match Platform: a single-platform image is used as
	// it is whatever the platform asked (BuildKit's keys), and the client
	// says so.
	ImagePlatform *ocispec.Platform `json:"imagePlatform,omitempty"`
	// LayerLimit is the image.layerlimit attribute; nil means no limit.
	LayerLimit *int `json:"layerLimit,omitempty"`
	// Cached, when set, is a result of an imported cache with the same
	// diffIDs: the snapshotter reads its blobs from its locations first,
	// and falls back to Ref and Layers when one of them is missing.
	Cached *CachedResult `json:"cached,omitempty"`
}

// BlobLocation is a place the blobs of a result can be read from.
type BlobLocation struct {
	// Ref is a registry repository holding the blobs
	// ("host/repo[:tag][@digest]"); empty for a layout.
	Ref string `json:"ref,omitempty"`
	// Layout is an OCI image layout directory holding the blobs, as the
	// service that imported it sees it (one process, or a shared volume);
	// empty for a registry.
	Layout string `json:"layout,omitempty"`
	// Session is the id of a client session serving the blobs over the
	// bus (pkg/session): the client that submitted the build, reachable
	// only while it is connected. Empty for a registry or a layout.
	Session string `json:"session,omitempty"`
	// Store names the store of Session that holds the blobs (the
	// oci.store attribute); set together with Session.
	Store string `json:"store,omitempty"`
}

// String is the reference, the directory or the session's store.
func (l BlobLocation) String() string {
	switch {
	case l.Session != "":
		return "session " + l.Session + " store " + l.Store
	case l.Layout != "":
		return "layout " + l.Layout
	}
	return l.Ref
}

// CachedResult is a layer chain an imported cache holds.
type CachedResult struct {
	// Layers are the chain's layers, bottom first, as the cache lists
	// them (their blobs may be compressed otherwise than the image's).
	Layers []Layer `json:"layers"`
	// Locations are where the blobs are, in the order to try them.
	Locations []BlobLocation `json:"locations"`
}

// CacheRecord is what the cache index holds under a key: a snapshot result
// and where it lives.
type CacheRecord struct {
	// Digests are the solver digests (CacheKey.Digest) the record is stored
	// under, one per index that was computed.
	Digests []digest.Digest `json:"digests"`
	// ChainID is the chainID of Layers' diffIDs: the snapshot's identity.
	ChainID digest.Digest `json:"chainID"`
	// Layers are the layers of the result, bottom first.
	Layers []Layer `json:"layers"`
	// Node names the snapshotter node that holds the unpacked snapshot; empty
	// when only the blobs are known (an imported cache).
	Node string `json:"node,omitempty"`
	// SnapshotKey is the snapshot's name in that node's snapshotter.
	SnapshotKey string `json:"snapshotKey,omitempty"`
	// Size is the unpacked size in bytes, 0 when unknown.
	Size int64 `json:"size,omitempty"`
	// Locations are where the layers' blobs can be read, in the order to
	// try them: an imported cache first, the origin registry last.
	Locations []BlobLocation `json:"locations,omitempty"`
	// CreatedAt is when the record was written, or, for an imported one,
	// when its result was made.
	CreatedAt time.Time `json:"createdAt"`
	// Snapshotter is the kind of containerd snapshotter holding the
	// snapshot on Node (overlayfs, native), as SnapshotReady says it;
	// empty when not known (no Node, or a record written before records
	// carried it).
	Snapshotter string `json:"snapshotter,omitempty"`
	// SnapshotsDir is where that snapshotter keeps its snapshots on Node;
	// empty with Snapshotter.
	SnapshotsDir string `json:"snapshotsDir,omitempty"`
	// Import is the source of the cache import the record came from (as
	// cache.import.requested named it: "type=registry,ref=…",
	// "type=local,src=…"); empty for a record the fleet made. Imports
	// serve every build (their records are keyed by the diffIDs their
	// blobs are verified against), so this only says where the record
	// came from: explain tells a hit on an import the build did not name.
	Import string `json:"import,omitempty"`
}

// Lazy reports that the record names blobs but no node holds its
// snapshot (an imported cache).
func (r CacheRecord) Lazy() bool { return r.Node == "" && len(r.Layers) > 0 }

// SourceResolveRequested asks the fleet to resolve a source. A client
// publishes it; it starts a build.
type SourceResolveRequested struct {
	// Source is the source to resolve, as the client wrote it.
	Source SourceOp `json:"source"`
	// Snapshot asks for the source's content, not only its keys: when every
	// key misses, the puller requests a snapshot. False ends the build at
	// the keys (cache.hit or cache.miss).
	Snapshot bool `json:"snapshot,omitempty"`
	// Session is the id of the build's client session (pkg/session):
	// BuildKit's session group, what the client that submitted the build
	// serves while it runs. The fleet reads from it what only the client
	// has: the secrets a source's credentials come from (Auth), and the
	// layouts and directories of oci-layout, oci-layout+blob and local
	// sources that name no session of their own (oci.session,
	// local.session). Empty means the build has none: no secret is
	// found, and a source that needs client content fails.
	Session string `json:"session,omitempty"`
	// SnapshotBy, when set, names the node of the snapshotter replica that
	// started the build for a builder's remote snapshot and makes the
	// snapshot itself, on its own node: the build wants the content
	// (watchers follow it to snapshot.ready or snapshot.failed, which that
	// replica publishes), yet no snapshot.requested goes out, since any
	// replica could take that. Snapshot is false with it. Empty for every
	// other build.
	SnapshotBy string `json:"snapshotBy,omitempty"`
	// Signatures holds, for each client session the request names (see
	// session.RequestSessions), that session key's signature of the
	// request: its build, its id, its type and this payload without
	// Signatures (pkg/session). The service that first acts on the
	// request refuses it when one is missing or wrong, so only the client
	// that holds a session can name it. Empty when it names none.
	Signatures map[string]string `json:"signatures,omitempty"`
}

// SourceResolved reports that the resolver parsed and validated a source and
// which handler continues with it.
type SourceResolved struct {
	// Source is the canonical form: identifier as BuildKit prints it,
	// attributes as given, platform filled in.
	Source SourceOp `json:"source"`
	// Scheme is the identifier's scheme, e.g. "docker-image".
	Scheme string `json:"scheme"`
	// Handler names the service that computes the keys (the consumer of the
	// following cachekey.requested), e.g. "puller".
	Handler string `json:"handler"`
	// Snapshot is the request's Snapshot.
	Snapshot bool `json:"snapshot,omitempty"`
	// Session is the request's Session.
	Session string `json:"session,omitempty"`
}

// SourceFailed ends a build with an error that retrying will not fix, or
// after the retries ran out. The bus runtime emits it for any consumer whose
// handler fails permanently.
type SourceFailed struct {
	// Source is the source that failed, as far as it was known.
	Source SourceOp `json:"source"`
	// Step is the type of the event whose handling failed.
	Step Type `json:"step"`
	// Reason is the error text; for bad input it is BuildKit's own message
	// ("no handler for git", "invalid layer limit 0", …).
	Reason string `json:"reason"`
	// Code classifies the failure: "invalid" (bad input), "not-found",
	// "unauthorized", "unreachable" (connection refused, another
	// protocol: not retried), "unavailable" (retries exhausted) or
	// "internal".
	Code string `json:"code"`
	// Attempts is how many times the step was tried.
	Attempts int `json:"attempts"`
}

// CacheKeyRequested asks a source handler for the key of one index.
type CacheKeyRequested struct {
	// Source is the canonical source (see SourceResolved).
	Source SourceOp `json:"source"`
	// Index is the CacheMap index to compute, starting at 0.
	Index int `json:"index"`
	// Keys are the keys computed at earlier indexes, in order; empty at 0.
	Keys []CacheKey `json:"keys,omitempty"`
	// CacheOpts carries what the earlier index learned (descriptors, diffIDs,
	// where to fetch), so the handler of this index needs no network. Nil at
	// index 0.
	CacheOpts *CacheOpts `json:"cacheOpts,omitempty"`
	// Snapshot is the request's Snapshot: on a final miss, request one.
	Snapshot bool `json:"snapshot,omitempty"`
	// Session is the request's Session, the build's client session.
	Session string `json:"session,omitempty"`
}

// CacheKeyComputed reports a key that missed in the cache index.
type CacheKeyComputed struct {
	// Source is the canonical source.
	Source SourceOp `json:"source"`
	// Key is the computed key; Key.Done tells whether another index follows.
	Key CacheKey `json:"key"`
	// CacheOpts is what the handler learned while computing the key.
	CacheOpts *CacheOpts `json:"cacheOpts,omitempty"`
}

// CacheHit reports that a key was found in the cache index; the build needs
// nothing more for this source.
type CacheHit struct {
	// Source is the canonical source.
	Source SourceOp `json:"source"`
	// Key is the key that hit.
	Key CacheKey `json:"key"`
	// Record is what the cache index holds for it.
	Record CacheRecord `json:"record"`
	// CacheOpts is what the handler learned about the source (where its
	// blobs are), for a client that materialises the result.
	CacheOpts *CacheOpts `json:"cacheOpts,omitempty"`
	// Snapshot is set when the record is lazy and the client asked for
	// the content: a snapshot.requested follows, and the build ends with
	// its snapshot.ready or snapshot.failed instead of here.
	Snapshot bool `json:"snapshot,omitempty"`
}

// CacheMiss reports that every index's key missed: the source must be
// fetched and snapshotted. It carries all keys, so the result can be recorded
// under each of them.
type CacheMiss struct {
	// Source is the canonical source.
	Source SourceOp `json:"source"`
	// Keys are the keys of every index, in order.
	Keys []CacheKey `json:"keys"`
	// CacheOpts describes what to fetch.
	CacheOpts *CacheOpts `json:"cacheOpts,omitempty"`
	// Explanation says what the miss differs in from the nearest record
	// the fleet made for the same source (pkg/lineage); nil when the
	// puller keeps no lineage for the scheme (only docker-image so far).
	Explanation *MissExplanation `json:"explanation,omitempty"`
}

// Sighting is what the fleet made a record of a source from: the facts
// its keys were computed from, kept per source (pkg/lineage) so that a
// later miss can say what it differs in.
type Sighting struct {
	// Build is the build that asked for the record.
	Build string `json:"build"`
	// Identifier is the source's identifier as the build named it (with
	// its tag).
	Identifier string `json:"identifier"`
	// Tag is the name the identifier resolved, which can point elsewhere
	// later: an image's tag (host/repo:tag), a git ref (the identifier
	// without its subdirectory, remote#ref; "#" alone for the default
	// branch), an http URL. Empty for an image digest or a git commit.
	Tag string `json:"tag,omitempty"`
	// Pin is what the first key is pinned to: the digest the tag resolved
	// to, the object the git ref pointed at, the http content's digest.
	Pin string `json:"pin"`
	// Platform is the platform the record is for ("linux/amd64").
	Platform string `json:"platform,omitempty"`
	// Attrs are the source's attributes that change its keys or content,
	// sorted by name.
	Attrs []Attr `json:"attrs,omitempty"`
	// Keys are the solver digests of its keys, in index order.
	Keys []digest.Digest `json:"keys"`
	// DiffIDs are the layers' diff_ids, bottom first.
	DiffIDs []digest.Digest `json:"diffIDs,omitempty"`
	// ETag is the ETag an http source's response had; empty when it had
	// none, and for other sources.
	ETag string `json:"etag,omitempty"`
	// LastModified is the Last-Modified time an http source's response
	// had; nil when it had none, and for other sources.
	LastModified *time.Time `json:"lastModified,omitempty"`
	// SeenAt is when the build asked.
	SeenAt time.Time `json:"seenAt"`
}

// Attr is one source attribute.
type Attr struct {
	// Name is the attribute's key, such as "image.layerlimit".
	Name string `json:"name"`
	// Value is its value.
	Value string `json:"value"`
}

// The kinds of Difference.
const (
	// DiffTagMoved: the tag points to another digest now (Old, then New,
	// with when each was seen).
	DiffTagMoved = "tag-moved"
	// DiffRefMoved: the git ref (Name) points to another commit or tag
	// object now (Old, then New, with when each was seen).
	DiffRefMoved = "ref-moved"
	// DiffContentChanged: the http URL (Name) serves other content now:
	// Old and New are the content digests (with http.checksum, the
	// checksums), with when each was seen.
	DiffContentChanged = "content-changed"
	// DiffReference: the record was made from another reference (Old
	// and New are the identifiers).
	DiffReference = "reference"
	// DiffPlatform: the record is for another platform.
	DiffPlatform = "platform"
	// DiffAttribute: an attribute (Name) has another value; an empty Old
	// or New means unset.
	DiffAttribute = "attribute"
	// DiffLayer: the first layer whose diff_id differs (Name is its
	// index, bottom first; an empty Old or New means the image has no
	// such layer).
	DiffLayer = "layer"
	// DiffETag: the http response's ETag differs (empty: none).
	DiffETag = "etag"
	// DiffLastModified: the http response's Last-Modified differs
	// (RFC 3339; empty: none).
	DiffLastModified = "last-modified"
	// DiffPruned: the record is no longer in the cache index (pruned, or
	// its snapshot never finished); Old is its last key.
	DiffPruned = "pruned"
	// DiffImportUnnamed: the record that hit came from a cache import
	// (Name: its source) that the build did not name.
	DiffImportUnnamed = "import-unnamed"
	// DiffImportNamed: the record that hit came from a cache import
	// (Name: its source) that the build named.
	DiffImportNamed = "import-named"
	// DiffImportLacked: a cache import the build named (Name: its source)
	// had no record for any of the miss's keys; Old is the last key.
	DiffImportLacked = "import-lacked"
	// DiffSessionScoped: the source is local, keyed by its client session
	// (Name), as in BuildKit: its key is never looked up in the cache
	// index, so it always misses and is transferred (incrementally).
	// There is no nearest record.
	DiffSessionScoped = "session-scoped"
)

// MissExplanation says what a miss differs in from the nearest record the
// fleet made for the same source.
type MissExplanation struct {
	// Source is the source identity the records are kept under (scheme
	// and name, no tag or digest).
	Source string `json:"source"`
	// Nearest is the record compared with; nil when the fleet made none
	// for this source (that is the explanation).
	Nearest *Sighting `json:"nearest,omitempty"`
	// Differences are what the miss differs in, in the order of
	// DiffTagMoved (DiffRefMoved, DiffContentChanged), DiffReference,
	// DiffETag, DiffLastModified, DiffPlatform, DiffAttribute, DiffLayer,
	// DiffPruned; or DiffSessionScoped alone.
	Differences []Difference `json:"differences,omitempty"`
}

// Difference is one way a miss differs from the nearest record.
type Difference struct {
	// Kind is one of the Diff constants.
	Kind string `json:"kind"`
	// Name is the attribute's name for DiffAttribute, the layer's index
	// for DiffLayer, the tag for DiffTagMoved, the ref for DiffRefMoved,
	// the URL for DiffContentChanged, the session for
	// DiffSessionScoped; empty otherwise.
	Name string `json:"name,omitempty"`
	// Old is the record's value.
	Old string `json:"old,omitempty"`
	// New is the miss's value.
	New string `json:"new,omitempty"`
	// OldSeen is when Old was seen (the record's SeenAt).
	OldSeen *time.Time `json:"oldSeen,omitempty"`
	// NewSeen is when New was seen (the miss).
	NewSeen *time.Time `json:"newSeen,omitempty"`
}

// SnapshotRequested asks the snapshotters for the snapshot of a source
// whose keys all missed. Any replica can take it: everything it needs
// travels in it.
type SnapshotRequested struct {
	// Source is the canonical source.
	Source SourceOp `json:"source"`
	// Keys are the keys of every index; the result is recorded under each.
	Keys []CacheKey `json:"keys"`
	// CacheOpts holds the layers (blob descriptors with their diffIDs) and
	// where to fetch them (the digest-pinned reference, or the Origin); nil
	// for a source that is not an image.
	CacheOpts *CacheOpts `json:"cacheOpts"`
	// Content says what the snapshot of a source that is not an image
	// holds (a file, a git checkout); nil for an image.
	Content *Content `json:"content,omitempty"`
	// Session is the build's client session (cachekey.requested's): while
	// the snapshot is made for this build, the snapshotter checks that it
	// still answers, and stops the work when it is gone (the client
	// cancelled or went away). Empty means the build has none: the work
	// goes on to its end.
	Session string `json:"session,omitempty"`
}

// Content is what the snapshot of a source other than an image holds.
// Exactly one field is set.
type Content struct {
	// File is a snapshot of one file: a blob fetched by digest
	// (docker-image+blob, oci-layout+blob) or an HTTP download.
	File *FileContent `json:"file,omitempty"`
	// Git is a checkout of a commit.
	Git *GitContent `json:"git,omitempty"`
	// Local is a directory of the client, sent over its session.
	Local *LocalContent `json:"local,omitempty"`
}

// Validate checks that exactly one kind of content (File, Git or Local) is
// set: a snapshot.requested names one thing to snapshot.
func (c *Content) Validate() error {
	switch n := len(c.kinds()); n {
	case 1:
		return nil
	case 0:
		return errors.New("content names nothing to snapshot")
	default:
		return fmt.Errorf("content names %d things to snapshot (file, git, local), want one", n)
	}
}

// Kind names the kind of content set, as its field's JSON name: "file",
// "git" or "local" (the values of source.ContentKind that are not
// layers). It is empty unless exactly one is set (Validate says why).
func (c *Content) Kind() string {
	if kinds := c.kinds(); len(kinds) == 1 {
		return kinds[0]
	}
	return ""
}

// kinds names the fields set.
func (c *Content) kinds() []string {
	var kinds []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"file", c.File != nil}, {"git", c.Git != nil}, {"local", c.Local != nil}} {
		if f.set {
			kinds = append(kinds, f.name)
		}
	}
	return kinds
}

// Key is the name of the content's snapshot: what identifies it on a node,
// the digest of its source's (last) key.
func (c *Content) Key(keys []CacheKey) string {
	if len(keys) == 0 {
		return ""
	}
	return "content-" + keys[len(keys)-1].Digest.Encoded()
}

// FileContent is a single-file snapshot.
type FileContent struct {
	// Name is the file's name in the snapshot (one path element).
	Name string `json:"name"`
	// Perm is the file's mode bits.
	Perm int64 `json:"perm"`
	// UID and GID own the file.
	UID int64 `json:"uid"`
	// GID is the file's group.
	GID int64 `json:"gid"`
	// ModTime is the file's mtime; nil means the Unix epoch.
	ModTime *time.Time `json:"modTime,omitempty"`
	// Digest is the content's digest, which the snapshot verifies.
	Digest digest.Digest `json:"digest"`
	// Size is the content's size in bytes; -1 when unknown.
	Size int64 `json:"size"`
	// Locations are where the content is as a blob (a registry
	// repository, a layout), tried in order.
	Locations []BlobLocation `json:"locations,omitempty"`
	// URL, when set, is where to download the content (http, https) when
	// no location has it.
	URL string `json:"url,omitempty"`
	// Headers are the request headers a download sends (BuildKit's
	// allowed ones), sorted by name.
	Headers []Header `json:"headers,omitempty"`
	// Auth, when set, names the client secrets a download's
	// Authorization header comes from (http.authheadersecret, or the
	// per-host ones); nil sends none.
	Auth *Auth `json:"auth,omitempty"`
}

// Header is one HTTP request header.
type Header struct {
	// Name is the canonical header name.
	Name string `json:"name"`
	// Value is its value.
	Value string `json:"value"`
}

// GitContent is a checkout of a git commit.
type GitContent struct {
	// Remote is the repository URL, credentials left out.
	Remote string `json:"remote"`
	// Ref is the ref the commit was resolved from (for a kept .git dir).
	Ref string `json:"ref,omitempty"`
	// Commit is the full commit SHA to check out.
	Commit string `json:"commit"`
	// Subdir, when set, makes the snapshot that directory of the tree.
	Subdir string `json:"subdir,omitempty"`
	// KeepGitDir keeps the .git directory in the snapshot.
	KeepGitDir bool `json:"keepGitDir,omitempty"`
	// SkipSubmodules leaves submodules out.
	SkipSubmodules bool `json:"skipSubmodules,omitempty"`
	// MTime is BuildKit's git.mtime: "checkout" (empty) or "commit".
	MTime string `json:"mtime,omitempty"`
	// Auth, when set, names the client secrets a fetch's Authorization
	// header comes from (git.authtokensecret, git.authheadersecret); nil
	// fetches without credentials.
	Auth *Auth `json:"auth,omitempty"`
}

// Auth says where the Authorization header of a source's requests comes
// from: secrets of the build's client session, by name. Events carry
// only the names. The service that sends a request reads the secret from
// the session when it sends it, sealed to that service alone on the way
// (pkg/session), and keeps it nowhere: not in an event, a log, a bucket
// or a key.
type Auth struct {
	// Session is the client session that holds the secrets; empty when
	// the build has none (every secret is then missing).
	Session string `json:"session,omitempty"`
	// Secrets are tried in order: the first the session holds gives the
	// header. A secret the session does not hold is skipped, unless it is
	// Required.
	Secrets []AuthSecret `json:"secrets"`
	// Scope limits the URLs the header is sent to: only those that start
	// with it (BuildKit's git "http.<scope>.extraheader", which is the
	// remote's URL, or https://github.com/ for every GitHub repository,
	// submodules included). Empty means every request of the source
	// (an http source's URL: Go's client drops the header when a redirect
	// leaves the host).
	Scope string `json:"scope,omitempty"`
}

// AuthSecret is one secret an Auth may read.
type AuthSecret struct {
	// Name is the secret's id in the client session (buildctl's
	// --secret id=…), e.g. "GIT_AUTH_TOKEN" or
	// "GIT_AUTH_TOKEN.github.com".
	Name string `json:"name"`
	// Form is how the secret becomes the header's value: AuthFormHeader,
	// AuthFormGitToken or AuthFormBearer.
	Form string `json:"form"`
	// Required makes a secret that cannot be read fail the source, with
	// BuildKit's "failed to retrieve HTTP auth secret <name>: …" (an
	// explicit http.authheadersecret). Otherwise a missing secret, or a
	// session that does not answer, means no header, as in BuildKit.
	Required bool `json:"required,omitempty"`
}

// The forms of an AuthSecret.
const (
	// AuthFormHeader sends the secret as the header's whole value
	// (git.authheadersecret, http.authheadersecret, HTTP_AUTH_HEADER_<host>).
	AuthFormHeader = "header"
	// AuthFormGitToken sends a git token the way BuildKit does:
	// "basic " + base64("x-access-token:" + secret) (git.authtokensecret).
	AuthFormGitToken = "git-token"
	// AuthFormBearer sends "Bearer " + secret (HTTP_AUTH_TOKEN_<host>).
	AuthFormBearer = "bearer"
)

// Header is the Authorization header's value that secret gives in s's
// form; false for a form it does not know.
func (s AuthSecret) Header(secret []byte) (string, bool) {
	switch s.Form {
	case AuthFormHeader:
		return string(secret), true
	case AuthFormGitToken:
		return "basic " + base64.StdEncoding.EncodeToString(append([]byte("x-access-token:"), secret...)), true
	case AuthFormBearer:
		return "Bearer " + string(secret), true
	}
	return "", false
}

// LocalContent is a directory a client serves over its session
// (local://), transferred incrementally: the snapshot of the last transfer
// with the same SharedKey on the node is the base, and only the files
// that differ from it are sent.
type LocalContent struct {
	// Session is the id of the client session that serves the directory.
	Session string `json:"session"`
	// Name is the directory's name in the session.
	Name string `json:"name"`
	// IncludePatterns, ExcludePatterns and FollowPaths select the paths
	// sent, with BuildKit's pattern semantics.
	IncludePatterns []string `json:"includePatterns,omitempty"`
	// ExcludePatterns are the paths left out.
	ExcludePatterns []string `json:"excludePatterns,omitempty"`
	// FollowPaths are symlinks resolved into IncludePatterns.
	FollowPaths []string `json:"followPaths,omitempty"`
	// SharedKey names the transfers that reuse each other's snapshot:
	// BuildKit's Name + ":" + local.sharedkeyhint.
	SharedKey string `json:"sharedKey"`
	// Differ is "metadata" (a file whose size, mtime, mode and owner are
	// those of the base is not sent) or "none" (every file is sent).
	Differ string `json:"differ"`
}

// SnapshotReady reports that the snapshot of a source exists and where.
type SnapshotReady struct {
	// Source is the canonical source.
	Source SourceOp `json:"source"`
	// Keys are the keys the result was recorded under in the cache index.
	Keys []CacheKey `json:"keys"`
	// ChainID is the chainID of the layers: the snapshot's identity. Empty
	// for an image without layers.
	ChainID string `json:"chainID"`
	// SnapshotKey is the committed snapshot's name in the node's
	// snapshotter.
	SnapshotKey string `json:"snapshotKey"`
	// Node names the snapshotter node that holds the snapshot.
	Node string `json:"node"`
	// Size is the uncompressed size of the layers in bytes.
	Size int64 `json:"size"`
	// Layers are the layers of the snapshot, bottom first.
	Layers []Layer `json:"layers"`
	// Fetched counts the blobs downloaded for this request (0 when the
	// snapshot or all its blobs were already there); for a local source,
	// the files transferred.
	Fetched int `json:"fetched"`
	// Reused counts the bottom layers that were already unpacked; equal to
	// len(Layers) when the snapshot existed.
	Reused int `json:"reused"`
	// Followed is set when another request built the snapshot while this
	// one waited for it.
	Followed bool `json:"followed,omitempty"`
	// Linked counts, for a local source, the files hard-linked from the
	// last transfer of the same directory instead of sent.
	Linked int `json:"linked,omitempty"`
	// Snapshotter is the kind of containerd snapshotter holding the
	// snapshot on Node (overlayfs, native); empty when the answering
	// node is not Node.
	Snapshotter string `json:"snapshotter,omitempty"`
	// SnapshotsDir is where that snapshotter keeps its snapshots on Node;
	// empty with Snapshotter.
	SnapshotsDir string `json:"snapshotsDir,omitempty"`
}

// SnapshotFailed ends a build whose snapshot cannot be made: a blob that
// does not match its digest or size, a layer that does not unpack to its
// diffID, a registry that refuses, or retries exhausted. It has
// SourceFailed's fields.
type SnapshotFailed SourceFailed

// Progress is one status update, shaped like BuildKit's progress so clients
// can render it the way buildctl does.
type Progress struct {
	// Vertex is the name of the step the status belongs to; for a source,
	// its identifier.
	Vertex string `json:"vertex"`
	// ID is the user-visible label, with BuildKit's wording:
	// "resolve docker.io/library/alpine:3.20", "sha256:<layer>",
	// "extracting sha256:<layer>".
	ID string `json:"id"`
	// Action is a short state word ("resolving", "downloading", "done").
	Action string `json:"action,omitempty"`
	// Current is the progress so far (bytes, or items).
	Current int64 `json:"current"`
	// Total is the expected end value; 0 when unknown.
	Total int64 `json:"total,omitempty"`
	// Started is when the item started.
	Started *time.Time `json:"started,omitempty"`
	// Completed is when the item finished; nil while it runs.
	Completed *time.Time `json:"completed,omitempty"`
	// Error is set when the item failed.
	Error string `json:"error,omitempty"`
}

// CacheExportRequested asks the exporter to write a BuildKit remote cache
// holding the results of a build's sources, or of explicit keys.
type CacheExportRequested struct {
	// Target is where and how, in buildctl's --export-cache syntax:
	// "type=local,dest=DIR[,tag=T]" or "type=registry,ref=REF", with
	// mode, image-manifest, oci-mediatypes, compression,
	// force-compression, ignore-error and registry.insecure.
	Target string `json:"target"`
	// Build, when set, exports the keys of that build's sources: every
	// key its cache.hit and snapshot.ready events name.
	Build string `json:"build,omitempty"`
	// Keys are solver digests (CacheKey.Digest) to export, beside those of
	// Build.
	Keys []digest.Digest `json:"keys,omitempty"`
	// Session is the client session a local target (type=local) is
	// written through: the client opened DIR with its own rights and
	// serves it as output store Store (pkg/session). The fleet never opens
	// a path a client names, so a local target without a session is
	// refused. Empty for a registry target.
	Session string `json:"session,omitempty"`
	// Store is the output store of Session that is DIR; set together
	// with Session.
	Store string `json:"store,omitempty"`
	// Signatures holds, for each client session the request names (see
	// session.RequestSessions), that session key's signature of the
	// request: its build, its id, its type and this payload without
	// Signatures (pkg/session). The service that first acts on the
	// request refuses it when one is missing or wrong, so only the client
	// that holds a session can name it. Empty when it names none.
	Signatures map[string]string `json:"signatures,omitempty"`
}

// CacheExported reports a written cache.
type CacheExported struct {
	// Target is the request's target.
	Target string `json:"target"`
	// Manifest is the descriptor of the cache's top-level manifest, as
	// BuildKit's exporter response gives it under "cache.manifest"; zero
	// when nothing was exported.
	Manifest ocispec.Descriptor `json:"cache.manifest"`
	// Records counts the records written (two roots per image source).
	Records int `json:"records"`
	// Layers counts the layer blobs the cache names.
	Layers int `json:"layers"`
	// Written counts the blobs written (uploaded, or copied into the
	// layout); Existed those the target already had; Mounted those a
	// registry mounted from another of its repositories.
	Written int `json:"written"`
	// Existed counts the blobs the target already had.
	Existed int `json:"existed"`
	// Mounted counts the blobs mounted across repositories.
	Mounted int `json:"mounted"`
	// Warning says why nothing was exported when the export failed with
	// ignore-error=true, or there was nothing to export.
	Warning string `json:"warning,omitempty"`
}

// CacheExportFailed reports an export that cannot be done (bad target,
// unknown keys, a cache BuildKit could not import, a registry refusal, or
// retries exhausted). It has SourceFailed's fields.
type CacheExportFailed SourceFailed

// CacheImportRequested asks the exporter to read a BuildKit remote cache
// into the cache index.
type CacheImportRequested struct {
	// Source is where, in buildctl's --import-cache syntax:
	// "type=local,src=DIR[,tag=T|digest=D]" or "type=registry,ref=REF".
	Source string `json:"source"`
	// Session is the client session a local source (type=local) is read
	// through: the client opened DIR with its own rights and serves it as
	// store Store (pkg/session). The imported records name that store as
	// where their blobs are, so a later pull reads them while the session
	// serves (BuildKit scopes a local import to its client's session too)
	// and from the origin otherwise. The fleet never opens a path a client
	// names, so a local source without a session is refused. Empty for a
	// registry source.
	Session string `json:"session,omitempty"`
	// Store is the store of Session that is DIR; set together with
	// Session.
	Store string `json:"store,omitempty"`
	// Signatures holds, for each client session the request names (see
	// session.RequestSessions), that session key's signature of the
	// request: its build, its id, its type and this payload without
	// Signatures (pkg/session). The service that first acts on the
	// request refuses it when one is missing or wrong, so only the client
	// that holds a session can name it. Empty when it names none.
	Signatures map[string]string `json:"signatures,omitempty"`
}

// CacheImported reports a cache read into the cache index.
type CacheImported struct {
	// Source is the request's source.
	Source string `json:"source"`
	// Manifest is the descriptor of the cache's top-level blob.
	Manifest ocispec.Descriptor `json:"manifest"`
	// MediaType is the media type inferred for it.
	MediaType string `json:"mediaType,omitempty"`
	// Records are the record digests put into the cache index, sorted:
	// the cache's records with a result, and one record per prefix of a
	// result chain (keyed as a source's index-1 key: the chainID).
	Records []digest.Digest `json:"records"`
	// Dropped counts the results left out: a blob the manifest does not
	// list, or a layer without a diffID.
	Dropped int `json:"dropped,omitempty"`
	// Warning says why nothing was imported (BuildKit skips a missing
	// local cache with a warning).
	Warning string `json:"warning,omitempty"`
}

// CacheImportFailed reports an import that cannot be done (bad source, a
// corrupt config, a manifest naming blobs the cache does not have).
type CacheImportFailed SourceFailed

// WatchBuildID is the build id the fleet publishes source.changed under:
// "stevedore watch --changes" follows it, and so does
// "nats sub 'stevedore.build.tag-watch.>'".
const WatchBuildID = "tag-watch"

// SourceChanged reports that a watched tag points to another digest than
// when the fleet last looked.
type SourceChanged struct {
	// Ref is the watched reference (host/repo:tag).
	Ref string `json:"ref"`
	// Platform is the platform the watch is for ("linux/amd64"); empty
	// for the fleet's.
	Platform string `json:"platform,omitempty"`
	// Old is the digest the tag pointed to.
	Old string `json:"old"`
	// New is the digest it points to now.
	New string `json:"new"`
	// Prepull says that the fleet pulls New onto the snapshotters (the
	// watch asked for it), under build PrepullBuild.
	Prepull bool `json:"prepull,omitempty"`
	// PrepullBuild is the build id of the pre-pull; empty without one.
	PrepullBuild string `json:"prepullBuild,omitempty"`
}
