package store

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
	"sync"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/session"
)

// Client reads blobs from the stores of sessions. It is safe for
// concurrent use; each blob it opens is read on its own.
type Client struct {
	c *session.Client
}

// NewClient returns a Client that sends its requests through c, in
// chunks of c.ChunkSize bytes, c.ReadAhead of them ahead of a reader.
func NewClient(c *session.Client) *Client { return &Client{c: c} }

// Stat returns the size of blob d in store of session id.
//
// Errors: *session.NoSessionError when the session does not answer;
// failure.ErrNotFound for a store or blob it does not have;
// failure.ErrInvalid for a malformed id or digest; the cause of ctx's end;
// NATS's.
func (c *Client) Stat(ctx context.Context, id, store string, d digest.Digest) (int64, error) {
	if err := session.Validate(id, d); err != nil {
		return 0, err
	}
	_, size, err := c.request(ctx, id, OpStat, BlobRequest{Store: store, Digest: d})
	return size, err
}

// Open returns a reader of the blob desc names in store of session id. It
// reads the first chunk before it returns, so a gone session or a missing
// blob fails here; the rest is read in order, session.WithReadAhead
// chunks ahead of the caller, until Close. A negative desc.Size means
// unknown; any other must be the blob's. At the end of the blob the reader
// checks its digest and fails instead of returning io.EOF when it differs.
// Close stops the requests and waits for them.
//
// Errors (here and from Read): Stat's; session.ErrVerify for a size or
// digest other than desc's; a read fails with *session.NoSessionError when
// the session stops answering midway.
func (c *Client) Open(ctx context.Context, id, store string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := session.Validate(id, desc.Digest); err != nil {
		return nil, err
	}
	chunk := c.c.ChunkSize()
	req := BlobRequest{Store: store, Digest: desc.Digest, Length: chunk}
	first, size, err := c.request(ctx, id, OpBlob, req)
	if err != nil {
		return nil, err
	}
	if desc.Size >= 0 && size != desc.Size {
		return nil, session.Errorf(session.CodeVerify, fmt.Sprintf("blob %s: session %s store %q holds %d bytes, want %d", desc.Digest, id, store, size, desc.Size))
	}
	n := int64(len(first))
	if n > size || (n == 0 && size > 0) {
		return nil, session.Errorf(session.CodeInternal, fmt.Sprintf("blob %s: session %s sent %d bytes of %d at offset 0", desc.Digest, id, n, size))
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
	return session.Errorf(session.CodeInvalid, fmt.Sprintf("blob %s is too large (%d > %d)", d, size, maxSize))
}

// Index reads the index.json of store of session id.
//
// Errors: *session.NoSessionError when the session does not answer;
// failure.ErrNotFound for a store it does not serve or a layout that is
// not there; failure.ErrInvalid for an index that does not parse or is
// too large; the cause of ctx's end; NATS's.
func (c *Client) Index(ctx context.Context, id, store string) (ocispec.Index, error) {
	if err := session.ValidateID(id); err != nil {
		return ocispec.Index{}, err
	}
	m, err := c.c.Request(ctx, id, OpIndex, BlobRequest{Store: store})
	if err != nil {
		return ocispec.Index{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(m.Data, &idx); err != nil {
		return ocispec.Index{}, session.Errorf(session.CodeInvalid, fmt.Sprintf("index of session %s store %q: %v", id, store, err))
	}
	return idx, nil
}

// request sends one request and returns the reply's body and its
// session.HeaderSize.
func (c *Client) request(ctx context.Context, id, op string, req BlobRequest) ([]byte, int64, error) {
	m, err := c.c.Request(ctx, id, op, req)
	if err != nil {
		return nil, 0, err
	}
	size, err := session.ReplySize(id, m)
	if err != nil {
		return nil, 0, err
	}
	return m.Data, size, nil
}

// chunkResult is one chunk, or the error that ends the read.
type chunkResult struct {
	data []byte
	err  error
}

// fetch reads the chunks of req's blob from offset off to size, keeping
// up to ReadAhead requests in flight, and hands them to r in order. It
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
				err = session.Errorf(session.CodeVerify, fmt.Sprintf("blob %s: session %s store %q now holds %d bytes, not %d", req.Digest, r.session, req.Store, got, size))
			case int64(len(data)) != want:
				err = session.Errorf(session.CodeInternal, fmt.Sprintf("blob %s: session %s sent %d bytes at offset %d, want %d", req.Digest, r.session, len(data), at, want))
			}
			p.res <- chunkResult{data: data, err: err}
		})
	}
	readAhead := c.c.ReadAhead()
	for next < size && len(queue) < readAhead {
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

// verify is the reader's end: io.EOF, or session.ErrVerify when the digest
// of what it returned differs from the descriptor's.
func (r *blobReader) verify() error {
	if got := digest.NewDigestFromBytes(r.desc.Digest.Algorithm(), r.verifier.Sum(nil)); got != r.desc.Digest {
		return session.Errorf(session.CodeVerify, fmt.Sprintf("blob %s from session %s: content has digest %s", r.desc.Digest, r.session, got))
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
