package session

import (
	"context"
	// The hash implementations go-digest needs for digest.SHA256, SHA384
	// and SHA512 to be available.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Client reads blobs from the stores of sessions. It is safe for
// concurrent use; each blob it opens is read on its own.
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

// Stat returns the size of blob d in store of session id.
//
// Errors: *NoSessionError when the session does not answer; failure.ErrNotFound
// for a store or blob it does not have; failure.ErrInvalid for a malformed id or
// digest; the cause of ctx's end; NATS's.
func (c *Client) Stat(ctx context.Context, id, store string, d digest.Digest) (int64, error) {
	if err := Validate(id, d); err != nil {
		return 0, err
	}
	_, size, err := c.request(ctx, id, OpStat, BlobRequest{Store: store, Digest: d})
	return size, err
}

// Open returns a reader of the blob desc names in store of session id. It
// reads the first chunk before it returns, so a gone session or a missing
// blob fails here; the rest is read in order, WithReadAhead chunks ahead
// of the caller, until Close. A negative desc.Size means unknown; any
// other must be the blob's. At the end of the blob the reader checks its
// digest and fails instead of returning io.EOF when it differs. Close
// stops the requests and waits for them.
//
// Errors (here and from Read): Stat's; ErrVerify for a size or digest
// other than desc's; a read fails with *NoSessionError when the session
// stops answering midway.
func (c *Client) Open(ctx context.Context, id, store string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := Validate(id, desc.Digest); err != nil {
		return nil, err
	}
	chunk := c.opts.chunk
	if mp := c.nc.MaxPayload(); mp > 0 && mp-4096 < chunk {
		chunk = max(mp-4096, 1)
	}
	req := BlobRequest{Store: store, Digest: desc.Digest, Length: chunk}
	first, size, err := c.request(ctx, id, OpBlob, req)
	if err != nil {
		return nil, err
	}
	if desc.Size >= 0 && size != desc.Size {
		return nil, errorf(CodeVerify, fmt.Sprintf("blob %s: session %s store %q holds %d bytes, want %d", desc.Digest, id, store, size, desc.Size))
	}
	n := int64(len(first))
	if n > size || (n == 0 && size > 0) {
		return nil, errorf(CodeInternal, fmt.Sprintf("blob %s: session %s sent %d bytes of %d at offset 0", desc.Digest, id, n, size))
	}
	// A server may send less than asked (a lower payload limit): ask it
	// for that much from then on.
	if n < min(chunk, size) {
		chunk = n
	}
	r := &blobReader{session: id, desc: desc, size: size, buf: first, verifier: desc.Digest.Algorithm().Hash()}
	if n < size {
		ctx, cancel := context.WithCancelCause(ctx)
		r.cancel = cancel
		r.chunks = make(chan chunkResult)
		r.done = make(chan struct{})
		req.Length = chunk
		go c.fetch(ctx, r, req, n, size)
	}
	return r, nil
}

// ReadBlob reads the whole of a small blob (a manifest, an index, a
// config), verified against desc. A descriptor or blob larger than
// maxSize is refused before its content is read.
//
// Errors: Open's; failure.ErrInvalid when the blob is larger than maxSize, with
// ocilayout's (BuildKit's) text "blob <d> is too large (<size> > <max>)".
func (c *Client) ReadBlob(ctx context.Context, id, store string, desc ocispec.Descriptor, maxSize int64) ([]byte, error) {
	if desc.Size > maxSize {
		return nil, tooLarge(desc.Digest, desc.Size, maxSize)
	}
	rc, err := c.Open(ctx, id, store, desc)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	if size := rc.(*blobReader).size; size > maxSize {
		return nil, tooLarge(desc.Digest, size, maxSize)
	}
	return io.ReadAll(rc)
}

func tooLarge(d digest.Digest, size, maxSize int64) error {
	return errorf(CodeInvalid, fmt.Sprintf("blob %s is too large (%d > %d)", d, size, maxSize))
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

// request sends one request and returns the reply's body and HeaderSize.
func (c *Client) request(ctx context.Context, id, op string, req any) ([]byte, int64, error) {
	m, err := c.requestMsg(ctx, id, op, req)
	if err != nil {
		return nil, 0, err
	}
	size, err := ReplySize(id, m)
	if err != nil {
		return nil, 0, err
	}
	return m.Data, size, nil
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

// chunkResult is one chunk, or the error that ends the read.
type chunkResult struct {
	data []byte
	err  error
}

// fetch reads the chunks of req's blob from offset off to size, keeping
// up to readAhead requests in flight, and hands them to r in order. It
// stops at the first error (which it hands over too) or when ctx ends,
// and waits for its requests before it closes r.done.
func (c *Client) fetch(ctx context.Context, r *blobReader, req BlobRequest, off, size int64) {
	// The requests in flight end with fetch: after an error nobody
	// wants their chunks.
	reqCtx, stop := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop(errClosed)
		wg.Wait()
		r.stopped = context.Cause(ctx)
		close(r.done)
	}()
	type pending struct {
		want int64
		res  chan chunkResult
	}
	var queue []pending
	next := off
	issue := func() {
		at, want := next, min(req.Length, size-next)
		next += want
		p := pending{want: want, res: make(chan chunkResult, 1)}
		queue = append(queue, p)
		wg.Go(func() {
			q := req
			q.Offset, q.Length = at, want
			data, got, err := c.request(reqCtx, r.session, OpBlob, q)
			switch {
			case err != nil:
			case got != size:
				err = errorf(CodeVerify, fmt.Sprintf("blob %s: session %s store %q now holds %d bytes, not %d", req.Digest, r.session, req.Store, got, size))
			case int64(len(data)) != want:
				err = errorf(CodeInternal, fmt.Sprintf("blob %s: session %s sent %d bytes at offset %d, want %d", req.Digest, r.session, len(data), at, want))
			}
			p.res <- chunkResult{data: data, err: err}
		})
	}
	for next < size && len(queue) < c.opts.readAhead {
		issue()
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		var res chunkResult
		select {
		case res = <-p.res:
		case <-ctx.Done():
			return
		}
		if res.err == nil && next < size {
			issue()
		}
		select {
		case r.chunks <- res:
		case <-ctx.Done():
			return
		}
		if res.err != nil {
			return
		}
	}
}

// blobReader is the reader Open returns.
type blobReader struct {
	session string
	desc    ocispec.Descriptor
	size    int64
	// buf is the unread rest of the current chunk.
	buf []byte
	// read counts the bytes returned so far.
	read     int64
	verifier hash.Hash
	err      error
	// chunks delivers the chunks after the first, in order, from fetch;
	// nil when the first was the whole blob. cancel stops fetch, which
	// closes done when its requests ended.
	chunks chan chunkResult
	cancel context.CancelCauseFunc
	done   chan struct{}
	closed bool
	// stopped is why fetch stopped early (its ctx's cause), written
	// before done is closed.
	stopped error
}

// errClosed is the cause given to a reader's requests when it is closed.
var errClosed = errors.New("session blob reader closed")

// Read implements io.Reader.
func (r *blobReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errClosed
	}
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.read == r.size {
			r.err = r.verify()
			continue
		}
		select {
		case res := <-r.chunks:
			if res.err != nil {
				r.err = res.err
				continue
			}
			r.buf = res.data
		case <-r.done:
			// fetch ended without handing over an error: its ctx ended.
			r.err = fmt.Errorf("read blob %s from session %s: %w", r.desc.Digest, r.session, r.stopped)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.read += int64(n)
	_, _ = r.verifier.Write(p[:n])
	return n, nil
}

// verify is the reader's end: io.EOF, or ErrVerify when the digest of what
// it returned differs from the descriptor's.
func (r *blobReader) verify() error {
	if got := digest.NewDigestFromBytes(r.desc.Digest.Algorithm(), r.verifier.Sum(nil)); got != r.desc.Digest {
		return errorf(CodeVerify, fmt.Sprintf("blob %s from session %s: content has digest %s", r.desc.Digest, r.session, got))
	}
	return io.EOF
}

// Close stops the reader's requests and waits for them.
func (r *blobReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.cancel != nil {
		r.cancel(errClosed)
		<-r.done
	}
	return nil
}
