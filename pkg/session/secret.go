package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// OpSecret reads a secret: stevedore.session.<id>.secret. The request is
// a SecretRequest; the reply's body is the secret sealed to the request's
// Key, and its HeaderSealedBy names the session's key to open it with.
// A secret is never sent in the clear, so nothing that sees the reply on
// its way (a NATS server's tracing, a stream that captures replies, a
// connection without TLS) can read it: only the requester can.
const OpSecret = "secret"

// HeaderSealedBy is the header holding the public curve key ("X…", nkeys)
// of whoever sealed the body: on an OpSecret reply, the session; on a
// request to a keyed session (see OpKey), the requester.
const HeaderSealedBy = "Stevedore-Sealed-By"

// MaxSecretSize is the largest secret a session serves: BuildKit's
// secretsprovider.MaxSecretSize, 500 KiB.
const MaxSecretSize = 500 * 1024

// SecretRequest is the body of an OpSecret request.
type SecretRequest struct {
	// ID is the secret's name (buildctl's --secret id=…).
	ID string `json:"id"`
	// Key is the requester's public curve key ("X…", nkeys): the session
	// seals the secret to it. A request without a valid one is refused.
	Key string `json:"key"`
}

// SecretStore holds the secrets a session serves.
type SecretStore interface {
	// Secret returns the secret named id. Errors: one matching
	// failure.ErrNotFound when the store has none by that name.
	Secret(ctx context.Context, id string) ([]byte, error)
}

// Secrets is a SecretStore of values held in memory, by name.
type Secrets map[string][]byte

var _ SecretStore = Secrets(nil)

// Secret implements SecretStore.
func (s Secrets) Secret(_ context.Context, id string) ([]byte, error) {
	v, ok := s[id]
	if !ok {
		return nil, secretNotFound(id)
	}
	return v, nil
}

// secretNotFound is BuildKit's text for a secret a session does not hold:
// "secret <id>: not found".
func secretNotFound(id string) error {
	return errorf(CodeNotFound, fmt.Sprintf("secret %s: not found", id))
}

// secret answers OpSecret.
func (s *Server) secret(ctx context.Context, data []byte) *nats.Msg {
	var req SecretRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("session %s: secret request: %v", s.id, err)))
	}
	if !nkeys.IsValidPublicCurveKey(req.Key) {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("session %s: secret %s: the request has no public curve key to seal it to", s.id, req.ID)))
	}
	if s.cfg.Secrets == nil || s.seal == nil {
		return errorReply(secretNotFound(req.ID))
	}
	v, err := s.cfg.Secrets.Secret(ctx, req.ID)
	switch {
	case errors.Is(err, failure.ErrNotFound):
		return errorReply(secretNotFound(req.ID))
	case err != nil:
		return errorReply(errorf(CodeInternal, fmt.Sprintf("secret %s: %v", req.ID, err)))
	case len(v) > MaxSecretSize:
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("secret %s too big. max size %d bytes", req.ID, MaxSecretSize)))
	}
	sealed, err := s.seal.Seal(v, req.Key)
	if err != nil {
		return errorReply(errorf(CodeInternal, fmt.Sprintf("secret %s: seal: %v", req.ID, err)))
	}
	return &nats.Msg{Header: nats.Header{HeaderSealedBy: []string{s.sealPub}}, Data: sealed}
}

// Secret reads the secret named name from session id, sealed to this
// client on the way.
//
// Errors: *NoSessionError when the session does not answer; failure.ErrNotFound,
// with BuildKit's text "secret <name>: not found", when it holds no such
// secret; failure.ErrInvalid for a malformed session id; ErrVerify for a reply
// that does not open; the cause of ctx's end; NATS's.
func (c *Client) Secret(ctx context.Context, id, name string) ([]byte, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	m, err := c.requestMsg(ctx, id, OpSecret, SecretRequest{ID: name, Key: c.openPub})
	if err != nil {
		return nil, err
	}
	v, err := c.open.Open(m.Data, m.Header.Get(HeaderSealedBy))
	if err != nil {
		return nil, errorf(CodeVerify, fmt.Sprintf("secret %s from session %s: the reply does not open: %v", name, id, err))
	}
	return v, nil
}

// Authorization returns the Authorization header a's secrets give, as
// BuildKit's git and http sources make it: the first of a.Secrets that a's
// session holds, in its form; "" when it holds none of them. A secret it
// does not hold is skipped, and so is a session that does not answer (or
// no session at all): the request then goes without credentials, unless
// the secret is Required.
//
// Errors: for a Required secret that cannot be read, BuildKit's "failed
// to retrieve HTTP auth secret <name>: …" wrapping why (matching
// failure.ErrNotFound, or ErrNoSession); failure.ErrInvalid for a form it does not
// know; otherwise Secret's, other than those above (a failed request:
// retrying may help).
func (c *Client) Authorization(ctx context.Context, a events.Auth) (string, error) {
	return authorization(ctx, c.Secret, a)
}

// Sessionless answers Authorization as for a build without a session:
// no header, and a Required secret fails with BuildKit's "failed to
// retrieve HTTP auth secret <name>: no active sessions". It is what a
// service that reads no sessions uses.
type Sessionless struct{}

// Authorization is Client.Authorization without a session.
func (Sessionless) Authorization(ctx context.Context, a events.Auth) (string, error) {
	a.Session = ""
	return authorization(ctx, nil, a)
}

// authorization is Authorization, reading secrets with read (never
// called when a names no session).
func authorization(ctx context.Context, read func(ctx context.Context, id, name string) ([]byte, error), a events.Auth) (string, error) {
	for _, s := range a.Secrets {
		var v []byte
		var err error = errNoSessions
		if a.Session != "" {
			v, err = read(ctx, a.Session, s.Name)
		}
		switch {
		case err == nil:
			h, ok := s.Header(v)
			if !ok {
				return "", errorf(CodeInvalid, fmt.Sprintf("secret %s: unknown form %q", s.Name, s.Form))
			}
			if i := strings.IndexFunc(h, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }); i >= 0 {
				why := "a control character"
				if strings.TrimRight(h, "\r\n") != h {
					why = "a line break at its end (a file written with echo?)"
				}
				return "", errorf(CodeInvalid, fmt.Sprintf("secret %s: not a valid Authorization header: it holds %s", s.Name, why))
			}
			return h, nil
		case s.Required && (errors.Is(err, failure.ErrNotFound) || errors.Is(err, ErrNoSession)):
			return "", fmt.Errorf("failed to retrieve HTTP auth secret %s: %w", s.Name, err)
		case errors.Is(err, failure.ErrNotFound):
			continue
		case errors.Is(err, ErrNoSession):
			// The session is gone: every other secret is too.
			return "", nil
		default:
			return "", err
		}
	}
	return "", nil
}

// errNoSessions is BuildKit's text when a build has no session to read a
// secret from.
var errNoSessions = &noSessionsError{}

type noSessionsError struct{}

func (*noSessionsError) Error() string { return "no active sessions" }

// Is matches ErrNoSession and its bus class.
func (*noSessionsError) Is(target error) bool { return (&NoSessionError{}).Is(target) }
