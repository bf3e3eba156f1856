package source

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// DiffType says how a local source decides that a file changed since the
// last transfer (local.differ).
type DiffType int

// The diff types, with fsutil's numbering.
const (
	// DiffMetadata compares file metadata (size, mtime, mode and so on).
	// It is the default.
	DiffMetadata DiffType = iota
	// DiffNone transfers every file.
	DiffNone
)

// String is the attribute value of the diff type.
func (d DiffType) String() string {
	if d == DiffNone {
		return "none"
	}
	return "metadata"
}

// LocalIdentifier is a parsed local:// identifier: a directory the client
// sends over its session. Its key starts with "session:", so it never
// matches across sessions or machines.
type LocalIdentifier struct {
	// Name is the name the client shares the directory under. With a
	// local.session of the form "a:b" it is "a-" + the identifier's name.
	Name string
	// SessionID is local.session: the client session to read from (the part
	// after the first ":" when there is one). Empty means any session of
	// the build.
	SessionID string
	// IncludePatterns is local.includepattern (a JSON array): only paths
	// matching one of them are sent. Nil means all.
	IncludePatterns []string
	// ExcludePatterns is local.excludepatterns (a JSON array): paths
	// matching one of them are not sent. Nil means none excluded.
	ExcludePatterns []string
	// FollowPaths is local.followpaths (a JSON array): paths whose symlinks
	// are followed. Nil means none.
	FollowPaths []string
	// SharedKeyHint is local.sharedkeyhint: a hint that lets transfers of
	// the same directory reuse an earlier snapshot. Empty means none.
	SharedKeyHint string
	// Differ is local.differ. An empty or unknown value means DiffMetadata,
	// as in BuildKit, which ignores values it does not know.
	Differ DiffType
	// MetadataOnly is local.metadatatransfer: send file metadata only, not
	// contents (except for MetadataExceptions).
	MetadataOnly bool
	// MetadataExceptions is local.metadatatransferexclude (a JSON array):
	// patterns whose contents are sent even when MetadataOnly is set. Nil
	// means none.
	MetadataExceptions []string
}

var _ Identifier = (*LocalIdentifier)(nil)

// Scheme implements Identifier.
func (*LocalIdentifier) Scheme() string { return SchemeLocal }

// String implements Identifier.
func (id *LocalIdentifier) String() string { return SchemeLocal + "://" + id.Name }

func init() {
	registerScheme(SchemeSpec{Name: SchemeLocal, Route: events.ComponentPuller, Content: ContentLocal, parse: parseLocal})
}

func parseLocal(_ string, ref string, attrs map[string]string, _ *ocispec.Platform) (Identifier, error) {
	id := &LocalIdentifier{Name: ref}
	var err error
	for k, v := range attrs {
		switch k {
		case AttrLocalSessionID:
			id.SessionID = v
			if prefix, session, ok := strings.Cut(v, ":"); ok {
				id.Name = prefix + "-" + id.Name
				id.SessionID = session
			}
		case AttrIncludePatterns:
			if id.IncludePatterns, err = parseStringList(v); err != nil {
				return nil, err
			}
		case AttrExcludePatterns:
			if id.ExcludePatterns, err = parseStringList(v); err != nil {
				return nil, err
			}
		case AttrFollowPaths:
			if id.FollowPaths, err = parseStringList(v); err != nil {
				return nil, err
			}
		case AttrSharedKeyHint:
			id.SharedKeyHint = v
		case AttrLocalDiffer:
			switch v {
			case "", "metadata":
				id.Differ = DiffMetadata
			case "none":
				id.Differ = DiffNone
			}
		case AttrMetadataTransfer:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, invalid(fmt.Sprintf("invalid value for local.metadatatransfer %q", v), err)
			}
			id.MetadataOnly = b
		case AttrMetadataTransferExclude:
			if id.MetadataExceptions, err = parseStringList(v); err != nil {
				return nil, err
			}
		}
	}
	return id, nil
}

// parseStringList decodes a JSON array of strings. Like BuildKit it reports
// a bad value with the bare JSON error.
func parseStringList(v string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, invalidCause(err)
	}
	return out, nil
}

// ErrNoSession is the error of a local source's key when there is no
// session to read it from. Its text is BuildKit's.
var ErrNoSession = invalid("could not access local files without session", nil)

// LocalKey is the key of a local source: what BuildKit's local source
// computes for index 0.
type LocalKey struct {
	// Key is "session:" + Name + ":" + Digest: it names the session, so
	// it never matches another build's (BuildKit makes the vertex digest
	// random for it).
	Key string
	// Digest is the digest of the JSON of the session and the patterns,
	// also the pin.
	Digest digest.Digest
}

// IsSessionKey reports whether key is a session-scoped key (a local
// source's), which is never a cache hit across builds and never exported.
func IsSessionKey(key string) bool { return strings.HasPrefix(key, "session:") }

// CacheKey returns the key for session (the identifier's SessionID when
// set, else the build's session), as BuildKit builds it. It needs no
// access to the session.
//
// Errors: ErrNoSession when neither names a session.
func (id *LocalIdentifier) CacheKey(session string) (LocalKey, error) {
	if id.SessionID != "" {
		session = id.SessionID
	}
	if session == "" {
		return LocalKey{}, ErrNoSession
	}
	dt, err := json.Marshal(struct {
		SessionID          string
		IncludePatterns    []string
		ExcludePatterns    []string
		FollowPaths        []string
		MetadataTransfer   bool     `json:",omitempty"`
		MetadataExceptions []string `json:",omitempty"`
	}{
		SessionID:          session,
		IncludePatterns:    id.IncludePatterns,
		ExcludePatterns:    id.ExcludePatterns,
		FollowPaths:        id.FollowPaths,
		MetadataTransfer:   id.MetadataOnly,
		MetadataExceptions: id.MetadataExceptions,
	})
	if err != nil {
		return LocalKey{}, err
	}
	d := digest.FromBytes(dt)
	return LocalKey{Key: "session:" + id.Name + ":" + d.String(), Digest: d}, nil
}

// SharedKey names the transfers of this directory that may reuse each
// other's files: BuildKit's Name + ":" + SharedKeyHint (+ ":metadata" for
// a metadata-only transfer).
func (id *LocalIdentifier) SharedKey() string {
	k := id.Name + ":" + id.SharedKeyHint
	if id.MetadataOnly {
		k += ":metadata"
	}
	return k
}
