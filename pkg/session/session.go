package session

import (
	"strings"

	"github.com/nats-io/nuid"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// SubjectRoot is the first tokens of every session subject:
// stevedore.session.<id>.<op>. Renaming it breaks every client and service
// of another version, and the NATS permissions (deploy/nats.conf) that
// allow it.
const SubjectRoot = "stevedore.session"

// Operations of the session itself: the last token of a session
// subject. Those of its protocols are in their packages.
const (
	// OpPing asks whether the session still serves a build:
	// stevedore.session.<id>.ping. The request body is ignored; the reply
	// is empty. A session that does not serve the request's build answers
	// as if it were gone.
	OpPing = "ping"
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
