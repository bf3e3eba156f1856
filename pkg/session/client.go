package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Client sends the requests of the session protocols (Request) to
// sessions, sealed to the keyed ones and checked against their
// signatures, and asks sessions whether they still serve a build (Ping).
// It is safe for concurrent use.
type Client struct {
	nc   *nats.Conn
	opts options
	// open is the client's curve key pair, which sessions seal secrets
	// to; openPub is its public key, sent with every secret request.
	open    nkeys.KeyPair
	openPub string
	// seals are the sealing keys of the keyed sessions asked.
	seals sealKeys
}

// Option configures a Client.
type Option func(*options) error

type options struct {
	timeout   time.Duration
	chunk     int64
	readAhead int
}

// WithRequestTimeout bounds the wait for each reply; a session that does
// not answer within it is taken for gone (*NoSessionError). The default is
// 30s, room for a chunk on a slow uplink.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("session: request timeout %s: must be positive", d)
		}
		o.timeout = d
		return nil
	}
}

// WithChunkSize sets the bytes asked for per request, 1 to MaxChunkSize.
// The default is MaxChunkSize (less when the NATS server's payload limit
// is lower).
func WithChunkSize(n int) Option {
	return func(o *options) error {
		if n < 1 || n > MaxChunkSize {
			return fmt.Errorf("session: chunk size %d: must be 1 to %d", n, MaxChunkSize)
		}
		o.chunk = int64(n)
		return nil
	}
}

// WithReadAhead sets how many chunks a reader keeps requested ahead of
// what it has returned, at least 1. The default is 4.
func WithReadAhead(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("session: read-ahead %d: must be at least 1", n)
		}
		o.readAhead = n
		return nil
	}
}

func makeOptions(opts []Option) (options, error) {
	o := options{timeout: 30 * time.Second, chunk: MaxChunkSize, readAhead: 4}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	return o, nil
}

// NewClient returns a Client that sends its requests on nc.
//
// Errors: an option's; making its key pair's.
func NewClient(nc *nats.Conn, opts ...Option) (*Client, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, fmt.Errorf("session client: secret key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("session client: secret key: %w", err)
	}
	return &Client{nc: nc, opts: o, open: kp, openPub: pub}, nil
}

// Validate checks session id (ValidateID) and digest d.
//
// Errors: failure.ErrInvalid for a malformed id or digest.
func Validate(id string, d digest.Digest) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return errorf(CodeInvalid, fmt.Sprintf("digest %q: %v", d, err))
	}
	return nil
}

// Request sends one request to operation op of session id, for the
// protocols of pkg/session's sub-packages: req in JSON (to a keyed
// session, sealed to its key), with the build of ctx (HeaderBuild). It
// returns the reply; a reply with HeaderError is returned as its error
// (Errorf), and one that a keyed session did not sign is dropped.
//
// Errors: *NoSessionError when the session does not answer (or answers
// CodeNoSession); the reply's; the cause of ctx's end; NATS's.
func (c *Client) Request(ctx context.Context, id, op string, req any) (*nats.Msg, error) {
	return c.requestMsg(ctx, id, op, req)
}

// ReplySize is the HeaderSize of a reply of session id.
//
// Errors: one of no class for a header missing or not a size.
func ReplySize(id string, m *nats.Msg) (int64, error) {
	size, err := strconv.ParseInt(m.Header.Get(HeaderSize), 10, 64)
	if err != nil || size < 0 {
		return 0, errorf(CodeInternal, fmt.Sprintf("session %s: reply without a valid %s header", id, HeaderSize))
	}
	return size, nil
}

// ChunkSize is how many bytes the client asks for per request:
// WithChunkSize's, less when the NATS server's payload limit is lower.
func (c *Client) ChunkSize() int64 {
	chunk := c.opts.chunk
	if mp := c.nc.MaxPayload(); mp > 0 && mp-4096 < chunk {
		chunk = max(mp-4096, 1)
	}
	return chunk
}

// MaxPayload is the NATS server's payload limit, in bytes.
func (c *Client) MaxPayload() int64 { return c.nc.MaxPayload() }

// ReadAhead is how many requests a reader keeps in flight
// (WithReadAhead).
func (c *Client) ReadAhead() int { return c.opts.readAhead }

// ReplyKey is the client's public curve key ("X…", nkeys), made for it
// alone: what a request asks a session to seal its answer to (a secret).
func (c *Client) ReplyKey() string { return c.openPub }

// OpenReply opens the body of m, sealed to ReplyKey by the key
// HeaderSealedBy names.
//
// Errors: the box's, for a body that does not open.
func (c *Client) OpenReply(m *nats.Msg) ([]byte, error) {
	return c.open.Open(m.Data, m.Header.Get(HeaderSealedBy))
}

// requestMsg sends one request (req in JSON; to a keyed session, sealed
// to its key) and returns the reply, or the error it carries.
func (c *Client) requestMsg(ctx context.Context, id, op string, req any) (*nats.Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	if IsKeyID(id) {
		pub, err := c.sealKey(ctx, id)
		if err != nil {
			return nil, err
		}
		if body, err = c.open.Seal(body, pub); err != nil {
			return nil, fmt.Errorf("session %s: seal request: %w", id, err)
		}
		h.Set(HeaderSealedBy, c.openPub)
	}
	return c.sendMsg(ctx, id, op, body, h)
}

// send sends one request of body as it is.
func (c *Client) send(ctx context.Context, id, op string, body []byte) (*nats.Msg, error) {
	return c.sendMsg(ctx, id, op, body, nats.Header{})
}

// sendMsg sends one request and returns the reply, or the error it
// carries; a keyed session's reply must be signed by its key.
func (c *Client) sendMsg(ctx context.Context, id, op string, body []byte, h nats.Header) (*nats.Msg, error) {
	timeout := fmt.Errorf("session %s did not answer within %s", id, c.opts.timeout)
	rctx, cancel := context.WithTimeoutCause(ctx, c.opts.timeout, timeout)
	defer cancel()
	msg := &nats.Msg{Subject: Subject(id, op), Data: body, Header: h}
	if in, ok := events.Input(ctx); ok {
		msg.Header.Set(HeaderBuild, in.BuildID)
	}
	var m *nats.Msg
	var err error
	if IsKeyID(id) {
		m, err = requestSigned(rctx, c.nc, id, msg)
	} else {
		m, err = c.nc.RequestMsgWithContext(rctx, msg)
	}
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, &NoSessionError{ID: id, Cause: err}
		case context.Cause(ctx) != nil:
			return nil, fmt.Errorf("session %s: %w", id, context.Cause(ctx))
		case errors.Is(context.Cause(rctx), timeout):
			return nil, &NoSessionError{ID: id, Cause: timeout}
		}
		return nil, fmt.Errorf("session %s: %w", id, err)
	}
	if code := m.Header.Get(HeaderError); code == CodeNoSession {
		return nil, &NoSessionError{ID: id, Cause: errors.New(string(m.Data))}
	} else if code != "" {
		return nil, Errorf(code, string(m.Data))
	}
	return m, nil
}

// Ping reports whether session id still serves the build being handled
// (events.Input): nil when it answers.
//
// Errors: *NoSessionError when it is gone or serves another build; the
// cause of ctx's end; NATS's.
func (c *Client) Ping(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	_, err := c.requestMsg(ctx, id, OpPing, struct{}{})
	return err
}
