package rootfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/klauspost/readahead"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// askTimeout bounds the wait for a node's Grant.
const askTimeout = 5 * time.Second

// Stream is a granted root filesystem's tar, read as it arrives. Read it
// to its end, then Verify before trusting what was made of it.
type Stream struct {
	resp *http.Response
	// ahead reads the body, hashing it into d, in a goroutine of its own
	// up to a few buffers ahead of the stream's reader: the network and
	// the hash on one core, what is made of the tar on another.
	ahead io.ReadCloser
	d     *digestWriter
}

// streamBuffer is the buffer on each side of a stream: a tar reader reads
// 512-byte headers, each a trip through the HTTP body's readers otherwise.
const streamBuffer = 1 << 20

// Open asks node for the root filesystem of req.SnapshotKey and opens
// its stream.
//
// Errors: ErrUnreachable when no node answers; ErrRefused (with the
// node's reason) when it refuses; the HTTP request's.
func Open(ctx context.Context, nc *nats.Conn, hc *http.Client, node string, req Request) (*Stream, error) {
	// A key of this request's own, which the grant is sealed to: another
	// client reading the reply reads nothing it can use.
	open, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	if req.Key, err = open.PublicKey(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	askCtx, cancel := context.WithTimeoutCause(ctx, askTimeout, fmt.Errorf("node %s: no answer within %s: %w", node, askTimeout, ErrUnreachable))
	defer cancel()
	msg, err := nc.RequestWithContext(askCtx, Subject(node), data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("node %s: %w: %w", node, ErrUnreachable, err)
		}
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	var g Grant
	if err := json.Unmarshal(msg.Data, &g); err != nil {
		return nil, fmt.Errorf("node %s: grant: %w", node, err)
	}
	if g.Error != "" || len(g.SealedURL) == 0 {
		return nil, fmt.Errorf("node %s: %w: %s", node, ErrRefused, g.Error)
	}
	url, err := open.Open(g.SealedURL, g.SealedBy)
	if err != nil {
		return nil, fmt.Errorf("node %s: open the grant: %w", node, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, string(url), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("node %s: %s: %w", node, resp.Status, ErrRefused)
	}
	d := newDigestWriter()
	ahead, err := readahead.NewReaderSize(io.TeeReader(resp.Body, d), streamAhead, streamBuffer)
	if err != nil {
		_ = resp.Body.Close()
		return nil, err
	}
	return &Stream{resp: resp, ahead: ahead, d: d}, nil
}

// streamAhead is how many buffers the stream's reading runs ahead.
const streamAhead = 4

// Read reads the tar stream.
func (s *Stream) Read(p []byte) (int, error) { return s.ahead.Read(p) }

// Verify reads what is left of the stream and checks it against the
// digest the node sent after it.
//
// Errors: ErrIncomplete; the read's.
func (s *Stream) Verify() error {
	// (A read-ahead reader at its end answers WriteTo with io.EOF.)
	if _, err := io.Copy(io.Discard, s.ahead); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %w", ErrIncomplete, err)
	}
	want := s.resp.Trailer.Get(TrailerDigest)
	if want == "" {
		return fmt.Errorf("%w: the node sent no digest (it stopped before the end)", ErrIncomplete)
	}
	if got := s.d.String(); got != want {
		return fmt.Errorf("%w: got %s, the node sent %s", ErrIncomplete, got, want)
	}
	return nil
}

// URL is where the stream came from (its grant, used up).
func (s *Stream) URL() string { return s.resp.Request.URL.String() }

// Close ends the stream: the body first, which ends a read in progress,
// then the reading ahead, which it waits for.
func (s *Stream) Close() error {
	err := s.resp.Body.Close()
	return errors.Join(err, s.ahead.Close())
}
