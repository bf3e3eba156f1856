package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/nats-io/nats.go"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
)

// Operations: the last token of a session subject.
const (
	// OpBlob reads a range of a blob: stevedore.session.<id>.blob. The
	// request is a BlobRequest; the reply's body is the blob's bytes from
	// Offset, Length of them or fewer at the blob's end, and its
	// session.HeaderSize is the whole blob's size.
	OpBlob = "blob"
	// OpStat tells a blob's size: stevedore.session.<id>.stat. The request
	// is a BlobRequest whose Offset and Length are ignored; the reply has
	// an empty body and session.HeaderSize.
	OpStat = "stat"
	// OpIndex reads a store's index.json: stevedore.session.<id>.index.
	// The request is a BlobRequest naming the store only; the reply's
	// body is the index in JSON (an empty index when nothing is tagged).
	OpIndex = "index"
)

// BlobRequest is the body of an OpBlob, OpStat or OpIndex request.
type BlobRequest struct {
	// Store is the store holding the blob (the oci.store attribute).
	Store string `json:"store"`
	// Digest is the blob's digest.
	Digest digest.Digest `json:"digest"`
	// Offset is the first byte to read; 0 to the blob's size.
	Offset int64 `json:"offset,omitempty"`
	// Length is how many bytes to read, 1 to session.MaxChunkSize (more
	// is answered with session.MaxChunkSize). Ignored by OpStat.
	Length int64 `json:"length,omitempty"`
}

// maxIndexBytes bounds the index.json an OpIndex reply carries.
const maxIndexBytes = 512 << 10

// Server serves the stores of a session: its OpBlob, OpStat and OpIndex.
type Server struct {
	stores map[string]*ocilayout.Layout
}

var _ session.Protocol = (*Server)(nil)

// NewServer returns a Server of stores, the OCI layouts the session
// serves, by store id (the oci.store attribute of the sources that read
// them). Nil serves nothing: every read is not found.
//
// Errors: a store without a layout.
func NewServer(stores map[string]*ocilayout.Layout) (*Server, error) {
	for id, l := range stores {
		if l == nil {
			return nil, fmt.Errorf("session: store %q has no layout", id)
		}
	}
	return &Server{stores: stores}, nil
}

// Ops implements session.Protocol: OpBlob, OpStat and OpIndex.
func (s *Server) Ops() []string { return []string{OpBlob, OpStat, OpIndex} }

// Answer implements session.Protocol.
func (s *Server) Answer(ctx context.Context, r session.Request) *nats.Msg {
	if r.Op == OpIndex {
		return s.index(ctx, r.Session, r.Data)
	}
	var req BlobRequest
	if err := json.Unmarshal(r.Data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: request: %v", r.Session, err)))
	}
	if r.Op == OpStat {
		f, size, err := s.open(ctx, r.Session, req)
		if err != nil {
			return session.ErrorReply(err)
		}
		_ = f.Close()
		return session.SizeReply(size, nil)
	}
	return s.read(ctx, r, req)
}

// index answers OpIndex.
func (s *Server) index(ctx context.Context, id string, data []byte) *nats.Msg {
	var req BlobRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: index request: %v", id, err)))
	}
	l, ok := s.stores[req.Store]
	if !ok {
		return session.ErrorReply(session.Errorf(session.CodeNotFound, fmt.Sprintf("session %s has no store %q", id, req.Store)))
	}
	idx, err := l.Index(ctx)
	if err != nil {
		code := session.CodeInternal
		switch {
		case errors.Is(err, ocilayout.ErrNotFound), errors.Is(err, fs.ErrNotExist):
			code = session.CodeNotFound
		case errors.Is(err, ocilayout.ErrInvalid):
			code = session.CodeInvalid
		}
		return session.ErrorReply(session.Errorf(code, fmt.Sprintf("index of store %q: %v", req.Store, err)))
	}
	body, err := json.Marshal(idx)
	if err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInternal, err.Error()))
	}
	if len(body) > maxIndexBytes {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("index of store %q: %d bytes, more than %d", req.Store, len(body), maxIndexBytes)))
	}
	return session.SizeReply(int64(len(body)), body)
}

// read answers OpBlob.
func (s *Server) read(ctx context.Context, r session.Request, req BlobRequest) *nats.Msg {
	f, size, err := s.open(ctx, r.Session, req)
	if err != nil {
		return session.ErrorReply(err)
	}
	defer func() { _ = f.Close() }()
	if req.Offset < 0 || req.Offset > size || req.Length <= 0 {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("blob %s: range %d+%d outside its %d bytes", req.Digest, req.Offset, req.Length, size)))
	}
	n := min(req.Length, size-req.Offset, r.Limit)
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, req.Offset)
	if err != nil && (!errors.Is(err, io.EOF) || int64(got) != n) {
		return session.ErrorReply(session.Errorf(session.CodeInternal, fmt.Sprintf("blob %s in store %q: read: %v", req.Digest, req.Store, err)))
	}
	return session.SizeReply(size, buf)
}

// blobFile is what read needs of an open blob.
type blobFile interface {
	io.ReaderAt
	io.Closer
	Stat() (fs.FileInfo, error)
}

// open opens the blob req names in its store and returns its size.
func (s *Server) open(ctx context.Context, id string, req BlobRequest) (blobFile, int64, error) {
	l, ok := s.stores[req.Store]
	if !ok {
		return nil, 0, session.Errorf(session.CodeNotFound, fmt.Sprintf("session %s has no store %q", id, req.Store))
	}
	if err := req.Digest.Validate(); err != nil {
		return nil, 0, session.Errorf(session.CodeInvalid, fmt.Sprintf("digest %q: %v", req.Digest, err))
	}
	rc, err := l.OpenBlob(ctx, ocispec.Descriptor{Digest: req.Digest})
	switch {
	case errors.Is(err, ocilayout.ErrNotFound):
		return nil, 0, session.Errorf(session.CodeNotFound, fmt.Sprintf("blob %s not found in store %q of session %s", req.Digest, req.Store, id))
	case errors.Is(err, ocilayout.ErrInvalid):
		return nil, 0, session.Errorf(session.CodeInvalid, fmt.Sprintf("blob %s in store %q: %v", req.Digest, req.Store, err))
	case err != nil:
		return nil, 0, session.Errorf(session.CodeInternal, fmt.Sprintf("blob %s in store %q: %v", req.Digest, req.Store, err))
	}
	f, ok := rc.(blobFile)
	if !ok {
		_ = rc.Close()
		return nil, 0, session.Errorf(session.CodeInternal, fmt.Sprintf("blob %s in store %q: not a file", req.Digest, req.Store))
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, session.Errorf(session.CodeInternal, fmt.Sprintf("blob %s in store %q: %v", req.Digest, req.Store, err))
	}
	return f, fi.Size(), nil
}
