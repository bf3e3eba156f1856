package session

import (
	"strings"

	"github.com/nats-io/nuid"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// SubjectRoot is the first tokens of every session subject:
// stevedore.session.<id>.<op>. Renaming it breaks every client and service
// of another version, and the NATS permissions (deploy/nats.conf) that
// allow it.
const SubjectRoot = "stevedore.session"

// Operations: the last token of a session subject.
const (
	// OpBlob reads a range of a blob: stevedore.session.<id>.blob. The
	// request is a BlobRequest; the reply's body is the blob's bytes from
	// Offset, Length of them or fewer at the blob's end, and its
	// HeaderSize is the whole blob's size.
	OpBlob = "blob"
	// OpStat tells a blob's size: stevedore.session.<id>.stat. The request
	// is a BlobRequest whose Offset and Length are ignored; the reply has
	// an empty body and HeaderSize.
	OpStat = "stat"
)

// Reply headers.
const (
	// HeaderSize is the size in bytes of the whole blob a reply is about,
	// in decimal.
	HeaderSize = "Stevedore-Blob-Size"
	// HeaderError, on an error reply, is the error's code (CodeNotFound,
	// CodeInvalid, CodeInternal); the body is then the error's text.
	HeaderError = "Stevedore-Error"
	// HeaderBuild, on a request, is the build the fleet reads for: the
	// build id of the event its service handles (events.Input). A session
	// that names its builds (Config.Builds) answers no other.
	HeaderBuild = "Stevedore-Build"
)

// MaxChunkSize is the most bytes one OpBlob reply carries: half of NATS's
// default 1 MiB max_payload, so that headers and a smaller server limit
// leave room. A Server answers a longer Length with this many bytes.
const MaxChunkSize = 512 << 10

// BlobRequest is the body of an OpBlob or OpStat request.
type BlobRequest struct {
	// Store is the store holding the blob (the oci.store attribute).
	Store string `json:"store"`
	// Digest is the blob's digest.
	Digest digest.Digest `json:"digest"`
	// Offset is the first byte to read; 0 to the blob's size.
	Offset int64 `json:"offset,omitempty"`
	// Length is how many bytes to read, 1 to MaxChunkSize (more is
	// answered with MaxChunkSize). Ignored by OpStat.
	Length int64 `json:"length,omitempty"`
}

// Subject is the subject of operation op of session id.
func Subject(id, op string) string { return SubjectRoot + "." + id + "." + op }

// Filter is the subject filter matching every operation of session id:
// what its Server subscribes to.
func Filter(id string) string { return SubjectRoot + "." + id + ".>" }

// MaxIDLen bounds session ids, which are subject tokens.
const MaxIDLen = events.MaxSessionIDLen

// NewID returns a new random session id (22 letters and digits).
func NewID() string { return nuid.Next() }

// ValidateID checks that id can be a subject token: 1 to MaxIDLen
// characters from [A-Za-z0-9_-] (events.ValidateSessionID). The error
// matches failure.ErrInvalid.
func ValidateID(id string) error {
	if err := events.ValidateSessionID(id); err != nil {
		return errorf(CodeInvalid, strings.TrimSuffix(err.Error(), ": "+events.ErrInvalid.Error()))
	}
	return nil
}
