package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
)

// Operations on the layouts a session lets the fleet write (Config.Outputs:
// a cache export's destination) and read whole (a cache import's source):
// the client does the file I/O with its own rights, and the bytes cross its
// session.
const (
	// OpWrite writes one chunk of a blob into an output store:
	// stevedore.session.<id>.write. The request is a WriteRequest; chunks
	// come in order from offset 0, and the one that ends the blob makes
	// the session verify it against its digest and commit it. The reply
	// is empty, with HeaderSize holding the bytes received so far.
	OpWrite = "write"
	// OpTag tags a manifest in an output store's index.json:
	// stevedore.session.<id>.tag. The request is a TagRequest; the blob
	// must be written first. The reply is empty.
	OpTag = "tag"
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

// WriteRequest is the body of an OpWrite request.
type WriteRequest struct {
	// Store is the output store written to.
	Store string `json:"store"`
	// Blob is the blob's descriptor: digest and whole size.
	Blob ocispec.Descriptor `json:"blob"`
	// Offset is where Data goes: 0 starts the blob again, any other must
	// be the bytes the session holds of it so far.
	Offset int64 `json:"offset"`
	// Data is the chunk, at most MaxWriteChunk bytes.
	Data []byte `json:"data"`
}

// TagRequest is the body of an OpTag request.
type TagRequest struct {
	// Store is the output store whose index.json gets the tag.
	Store string `json:"store"`
	// Manifest is the descriptor tagged.
	Manifest ocispec.Descriptor `json:"manifest"`
	// Tag is the tag (org.opencontainers.image.ref.name).
	Tag string `json:"tag"`
}

// MaxWriteChunk is the most bytes one OpWrite request carries: in JSON
// (base64) it stays well below NATS's default 1 MiB max_payload.
const MaxWriteChunk = 256 << 10

// maxIndexBytes bounds the index.json an OpIndex reply carries.
const maxIndexBytes = 512 << 10

// ingestName is the file in an output store's root that holds the chunks
// of a blob received so far.
func ingestName(d digest.Digest) string { return ".ingest-" + d.Encoded() }

// writeBlob answers OpWrite.
func (s *Server) writeBlob(ctx context.Context, data []byte) *nats.Msg {
	var req WriteRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("session %s: write request: %v", s.id, err)))
	}
	l, ok := s.cfg.Outputs[req.Store]
	if !ok {
		return errorReply(errorf(CodeNotFound, fmt.Sprintf("session %s has no output store %q", s.id, req.Store)))
	}
	d := req.Blob.Digest
	if err := d.Validate(); err != nil || req.Blob.Size < 0 {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("write blob %q of %d bytes: invalid descriptor", d, req.Blob.Size)))
	}
	if req.Offset < 0 || req.Offset+int64(len(req.Data)) > req.Blob.Size || len(req.Data) > MaxWriteChunk {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("write blob %s: chunk %d+%d outside its %d bytes", d, req.Offset, len(req.Data), req.Blob.Size)))
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	name := filepath.Join(l.Root(), ingestName(d))
	flags := os.O_WRONLY | os.O_CREATE
	if req.Offset == 0 {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(name, flags, 0o644) //nolint:gosec // G304: the client's own layout, written with its rights
	if err != nil {
		return errorReply(errorf(CodeInternal, fmt.Sprintf("write blob %s: %v", d, err)))
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != req.Offset {
		err = errorf(CodeInvalid, fmt.Sprintf("write blob %s: chunk at %d, the session holds %d bytes", d, req.Offset, fi.Size()))
	}
	if err == nil {
		_, err = f.WriteAt(req.Data, req.Offset)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return errorReply(err)
	}
	held := req.Offset + int64(len(req.Data))
	if held < req.Blob.Size {
		return sizeReply(held, nil)
	}
	if err := commitIngest(ctx, l, name, req.Blob); err != nil {
		code := CodeInternal
		if errors.Is(err, ocilayout.ErrVerify) || errors.Is(err, ocilayout.ErrInvalid) {
			code = CodeInvalid
		}
		return errorReply(errorf(code, fmt.Sprintf("write blob %s: %v", d, err)))
	}
	return sizeReply(held, nil)
}

// commitIngest verifies the ingest file name against desc and stores it
// in l; the ingest file is removed either way.
func commitIngest(ctx context.Context, l *ocilayout.Layout, name string, desc ocispec.Descriptor) error {
	defer func() { _ = os.Remove(name) }()
	f, err := os.Open(name) //nolint:gosec // G304: the ingest file this session wrote
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	_, err = l.WriteBlob(ctx, desc, f)
	return err
}

// tag answers OpTag.
func (s *Server) tag(ctx context.Context, data []byte) *nats.Msg {
	var req TagRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return errorReply(errorf(CodeInvalid, fmt.Sprintf("session %s: tag request: %v", s.id, err)))
	}
	l, ok := s.cfg.Outputs[req.Store]
	if !ok {
		return errorReply(errorf(CodeNotFound, fmt.Sprintf("session %s has no output store %q", s.id, req.Store)))
	}
	has, err := l.Has(ctx, req.Manifest)
	if err == nil && !has {
		err = errorf(CodeInvalid, fmt.Sprintf("tag %s: blob %s is not written", req.Tag, req.Manifest.Digest))
	}
	if err == nil {
		err = l.Tag(ctx, req.Manifest, req.Tag)
	}
	if err != nil {
		if errors.Is(err, ocilayout.ErrInvalid) {
			err = errorf(CodeInvalid, err.Error())
		}
		return errorReply(err)
	}
	return sizeReply(0, nil)
}

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

// layout is the store named store, read-only or output.
func (s *Server) layout(store string) (*ocilayout.Layout, bool) {
	if l, ok := s.cfg.Stores[store]; ok {
		return l, true
	}
	l, ok := s.cfg.Outputs[store]
	return l, ok
}

// Write writes the blob desc names, read from r, into output store store
// of session id, in chunks of at most MaxWriteChunk bytes; the session
// verifies the digest when the last arrives and commits the blob. r must
// yield exactly desc.Size bytes.
//
// Errors: *NoSessionError when the session does not answer; ErrNotFound
// for a store it does not let the fleet write; ErrInvalid when the session
// refuses the content (a digest or size other than desc's); r's error; the
// cause of ctx's end; NATS's.
func (c *Client) Write(ctx context.Context, id, store string, desc ocispec.Descriptor, r io.Reader) error {
	if err := validate(id, desc.Digest); err != nil {
		return err
	}
	chunk := int64(MaxWriteChunk)
	if mp := c.nc.MaxPayload(); mp > 0 && (mp-4096)*3/4 < chunk {
		chunk = max((mp-4096)*3/4, 1)
	}
	buf := make([]byte, chunk)
	var off int64
	for {
		n, err := io.ReadFull(r, buf[:min(chunk, max(desc.Size-off, 0))])
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("write blob %s: %w", desc.Digest, err)
		}
		if _, err := c.requestMsg(ctx, id, OpWrite, WriteRequest{Store: store, Blob: desc, Offset: off, Data: buf[:n]}); err != nil {
			return err
		}
		off += int64(n)
		if off >= desc.Size {
			return nil
		}
		if n == 0 {
			return errorf(CodeVerify, fmt.Sprintf("write blob %s: the content ended at %d of %d bytes", desc.Digest, off, desc.Size))
		}
	}
}

// Tag tags manifest in output store store of session id.
//
// Errors: as Write's.
func (c *Client) Tag(ctx context.Context, id, store string, manifest ocispec.Descriptor, tag string) error {
	if err := validate(id, manifest.Digest); err != nil {
		return err
	}
	_, err := c.requestMsg(ctx, id, OpTag, TagRequest{Store: store, Manifest: manifest, Tag: tag})
	return err
}

// Index reads the index.json of store of session id.
//
// Errors: *NoSessionError when the session does not answer; ErrNotFound
// for a store it does not serve or a layout that is not there; ErrInvalid
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
// (bus.Input): nil when it answers.
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
