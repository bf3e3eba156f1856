// Package secret is the session protocol through which the fleet reads
// the secrets a client holds for its build (buildctl's --secret id=…): the
// token or header a git or http source authenticates with. A secret is
// read when a request needs it (Client.Secret, Client.Authorization) and
// sealed to the reader on the way: the reader sends a public curve key
// (nkeys "X…") made for it alone (session.Client.ReplyKey), and the
// session answers with the secret sealed by a key pair of its own (NaCl
// box: X25519, XSalsa20, Poly1305), so only that reader opens it.
// Services keep secrets nowhere: not in events, logs, buckets or keys.
//
// A session serves its secrets with a Server in its
// session.Config.Protocols, on stevedore.session.<id>.secret (OpSecret).
//
// Errors: a secret the session does not hold matches failure.ErrNotFound,
// with BuildKit's text "secret <id>: not found"; a request without a key
// to seal to, or a secret larger than MaxSize, failure.ErrInvalid; a reply
// that does not open, session.ErrVerify.
package secret

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
	"github.com/stevedore-dev/stevedore/pkg/session"
)

// OpSecret reads a secret: stevedore.session.<id>.secret. The request is
// a Request; the reply's body is the secret sealed to the request's
// Key, and its session.HeaderSealedBy names the session's key to open it with.
// A secret is never sent in the clear, so nothing that sees the reply on
// its way (a NATS server's tracing, a stream that captures replies, a
// connection without TLS) can read it: only the requester can.
const OpSecret = "secret"

// MaxSize is the largest secret a session serves: BuildKit's
// secretsprovider.MaxSize, 500 KiB.
const MaxSize = 500 * 1024

// Request is the body of an OpSecret request.
type Request struct {
	// ID is the secret's name (buildctl's --secret id=…).
	ID string `json:"id"`
	// Key is the requester's public curve key ("X…", nkeys): the session
	// seals the secret to it. A request without a valid one is refused.
	Key string `json:"key"`
}

// Store holds the secrets a session serves.
type Store interface {
	// Secret returns the secret named id. Errors: one matching
	// failure.ErrNotFound when the store has none by that name.
	Secret(ctx context.Context, id string) ([]byte, error)
}

// Map is a Store of values held in memory, by name.
type Map map[string][]byte

var _ Store = Map(nil)

// Secret implements Store.
func (s Map) Secret(_ context.Context, id string) ([]byte, error) {
	v, ok := s[id]
	if !ok {
		return nil, secretNotFound(id)
	}
	return v, nil
}

// secretNotFound is BuildKit's text for a secret a session does not hold:
// "secret <id>: not found".
func secretNotFound(id string) error {
	return session.Errorf(session.CodeNotFound, fmt.Sprintf("secret %s: not found", id))
}

// Server serves the secrets of a session: its OpSecret.
type Server struct {
	store Store
	// seal is the session's curve key pair, made for it alone, that
	// secrets are sealed with; sealPub is its public key.
	seal    nkeys.KeyPair
	sealPub string
}

var _ session.Protocol = (*Server)(nil)

// NewServer returns a Server of the secrets of store, with a curve key
// pair of its own to seal them with: give each session a Server of its
// own, so that its key is made for it alone. A nil store serves none:
// every secret is not found.
//
// Errors: making the key pair's.
func NewServer(store Store) (*Server, error) {
	s := &Server{store: store}
	var err error
	if s.seal, err = nkeys.CreateCurveKeys(); err == nil {
		s.sealPub, err = s.seal.PublicKey()
	}
	if err != nil {
		return nil, fmt.Errorf("session secrets: key: %w", err)
	}
	return s, nil
}

// Ops implements session.Protocol: OpSecret.
func (s *Server) Ops() []string { return []string{OpSecret} }

// Answer implements session.Protocol: it answers OpSecret.
func (s *Server) Answer(ctx context.Context, r session.Request) *nats.Msg {
	var req Request
	if err := json.Unmarshal(r.Data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: secret request: %v", r.Session, err)))
	}
	if !nkeys.IsValidPublicCurveKey(req.Key) {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: secret %s: the request has no public curve key to seal it to", r.Session, req.ID)))
	}
	if s.store == nil {
		return session.ErrorReply(secretNotFound(req.ID))
	}
	v, err := s.store.Secret(ctx, req.ID)
	switch {
	case errors.Is(err, failure.ErrNotFound):
		return session.ErrorReply(secretNotFound(req.ID))
	case err != nil:
		return session.ErrorReply(session.Errorf(session.CodeInternal, fmt.Sprintf("secret %s: %v", req.ID, err)))
	case len(v) > MaxSize:
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("secret %s too big. max size %d bytes", req.ID, MaxSize)))
	}
	sealed, err := s.seal.Seal(v, req.Key)
	if err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInternal, fmt.Sprintf("secret %s: seal: %v", req.ID, err)))
	}
	return &nats.Msg{Header: nats.Header{session.HeaderSealedBy: []string{s.sealPub}}, Data: sealed}
}

// Client reads the secrets of sessions.
type Client struct {
	c *session.Client
}

// NewClient returns a Client that sends its requests through c, and has
// the secrets sealed to c's ReplyKey.
func NewClient(c *session.Client) *Client { return &Client{c: c} }

// Secret reads the secret named name from session id, sealed to this
// client on the way.
//
// Errors: *session.NoSessionError when the session does not answer; failure.ErrNotFound,
// with BuildKit's text "secret <name>: not found", when it holds no such
// secret; failure.ErrInvalid for a malformed session id; session.ErrVerify for a reply
// that does not open; the cause of ctx's end; NATS's.
func (c *Client) Secret(ctx context.Context, id, name string) ([]byte, error) {
	if err := session.ValidateID(id); err != nil {
		return nil, err
	}
	m, err := c.c.Request(ctx, id, OpSecret, Request{ID: name, Key: c.c.ReplyKey()})
	if err != nil {
		return nil, err
	}
	v, err := c.c.OpenReply(m)
	if err != nil {
		return nil, session.Errorf(session.CodeVerify, fmt.Sprintf("secret %s from session %s: the reply does not open: %v", name, id, err))
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
// failure.ErrNotFound, or session.ErrNoSession); failure.ErrInvalid for a form it does not
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
				return "", session.Errorf(session.CodeInvalid, fmt.Sprintf("secret %s: unknown form %q", s.Name, s.Form))
			}
			if i := strings.IndexFunc(h, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }); i >= 0 {
				why := "a control character"
				if strings.TrimRight(h, "\r\n") != h {
					why = "a line break at its end (a file written with echo?)"
				}
				return "", session.Errorf(session.CodeInvalid, fmt.Sprintf("secret %s: not a valid Authorization header: it holds %s", s.Name, why))
			}
			return h, nil
		case s.Required && (errors.Is(err, failure.ErrNotFound) || errors.Is(err, session.ErrNoSession)):
			return "", fmt.Errorf("failed to retrieve HTTP auth secret %s: %w", s.Name, err)
		case errors.Is(err, failure.ErrNotFound):
			continue
		case errors.Is(err, session.ErrNoSession):
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

// Is matches session.ErrNoSession and its bus class.
func (*noSessionsError) Is(target error) bool { return (&session.NoSessionError{}).Is(target) }
