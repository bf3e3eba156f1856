package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/nats-io/nats.go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
)

// Operations on the session's stores as a whole, and on the session.
const (
	// OpIndex reads a store's index.json: stevedore.session.<id>.index.
	// The request is a BlobRequest naming the store only; the reply's
	// body is the index in JSON (an empty index when nothing is tagged).
	OpIndex = "index"
	// OpPing asks whether the session still serves a build:
	// stevedore.session.<id>.ping. The request body is ignored; the reply
	// is empty. A session that does not serve the request's build answers
	// as if it were gone.
	OpPing = "ping"
)

// maxIndexBytes bounds the index.json an OpIndex reply carries.
const maxIndexBytes = 512 << 10

// index answers OpIndex.
func (s *Server) index(ctx context.Context, data []byte) *nats.Msg {
	var req BlobRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("session %s: index request: %v", s.id, err)))
	}
	l, ok := s.layout(req.Store)
	if !ok {
		return errorReply(errorf(CodeNotFound, fmt.Sprintf("session %s has no store %q", s.id, req.Store)))
	}
	idx, err := l.Index(ctx)
	if err != nil {
		code := CodeInternal
		switch {
		case errors.Is(err, ocilayout.ErrNotFound), errors.Is(err, fs.ErrNotExist):
			code = CodeNotFound
		case errors.Is(err, ocilayout.ErrInvalid):
			code = CodeInvalid
		}
		return errorReply(errorf(code, fmt.Sprintf("index of store %q: %v", req.Store, err)))
	}
	body, err := json.Marshal(idx)
	if err != nil {
		return errorReply(errorf(CodeInternal, err.Error()))
	}
	if len(body) > maxIndexBytes {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("index of store %q: %d bytes, more than %d", req.Store, len(body), maxIndexBytes)))
	}
	return sizeReply(int64(len(body)), body)
}

// layout is the store named store.
func (s *Server) layout(store string) (*ocilayout.Layout, bool) {
	l, ok := s.cfg.Stores[store]
	return l, ok
}

// Index reads the index.json of store of session id.
//
// Errors: *NoSessionError when the session does not answer; failure.ErrNotFound
// for a store it does not serve or a layout that is not there; failure.ErrInvalid
// for an index that does not parse or is too large; the cause of ctx's
// end; NATS's.
func (c *Client) Index(ctx context.Context, id, store string) (ocispec.Index, error) {
	if err := ValidateID(id); err != nil {
		return ocispec.Index{}, err
	}
	m, err := c.requestMsg(ctx, id, OpIndex, BlobRequest{Store: store})
	if err != nil {
		return ocispec.Index{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(m.Data, &idx); err != nil {
		return ocispec.Index{}, errorf(CodeInvalid, fmt.Sprintf("index of session %s store %q: %v", id, store, err))
	}
	return idx, nil
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
