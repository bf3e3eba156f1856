package output

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
)

// Operations on the layouts a session lets the fleet write (a cache
// export's destination): the client does the file I/O with its own
// rights, and the bytes cross its session.
const (
	// OpWrite writes one chunk of a blob into an output store:
	// stevedore.session.<id>.write. The request is a WriteRequest; chunks
	// come in order from offset 0, and the one that ends the blob makes
	// the session verify it against its digest and commit it. The reply
	// is empty, with session.HeaderSize holding the bytes received so far.
	OpWrite = "write"
	// OpTag tags a manifest in an output store's index.json:
	// stevedore.session.<id>.tag. The request is a TagRequest; the blob
	// must be written first. The reply is empty.
	OpTag = "tag"
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

// ingestName is the file in an output store's root that holds the chunks
// of a blob received so far.
func ingestName(d digest.Digest) string { return ".ingest-" + d.Encoded() }

// writeBlob answers OpWrite.
func (s *Server) writeBlob(ctx context.Context, id string, data []byte) *nats.Msg {
	var req WriteRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: write request: %v", id, err)))
	}
	l, ok := s.outputs[req.Store]
	if !ok {
		return session.ErrorReply(session.Errorf(session.CodeNotFound, fmt.Sprintf("session %s has no output store %q", id, req.Store)))
	}
	d := req.Blob.Digest
	if err := d.Validate(); err != nil || req.Blob.Size < 0 {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("write blob %q of %d bytes: invalid descriptor", d, req.Blob.Size)))
	}
	if req.Offset < 0 || req.Offset+int64(len(req.Data)) > req.Blob.Size || len(req.Data) > MaxWriteChunk {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("write blob %s: chunk %d+%d outside its %d bytes", d, req.Offset, len(req.Data), req.Blob.Size)))
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
		return session.ErrorReply(session.Errorf(session.CodeInternal, fmt.Sprintf("write blob %s: %v", d, err)))
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != req.Offset {
		err = session.Errorf(session.CodeInvalid, fmt.Sprintf("write blob %s: chunk at %d, the session holds %d bytes", d, req.Offset, fi.Size()))
	}
	if err == nil {
		_, err = f.WriteAt(req.Data, req.Offset)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return session.ErrorReply(err)
	}
	held := req.Offset + int64(len(req.Data))
	if held < req.Blob.Size {
		return session.SizeReply(held, nil)
	}
	if err := commitIngest(ctx, l, name, req.Blob); err != nil {
		code := session.CodeInternal
		if errors.Is(err, ocilayout.ErrVerify) || errors.Is(err, ocilayout.ErrInvalid) {
			code = session.CodeInvalid
		}
		return session.ErrorReply(session.Errorf(code, fmt.Sprintf("write blob %s: %v", d, err)))
	}
	return session.SizeReply(held, nil)
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
func (s *Server) tag(ctx context.Context, id string, data []byte) *nats.Msg {
	var req TagRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: tag request: %v", id, err)))
	}
	l, ok := s.outputs[req.Store]
	if !ok {
		return session.ErrorReply(session.Errorf(session.CodeNotFound, fmt.Sprintf("session %s has no output store %q", id, req.Store)))
	}
	has, err := l.Has(ctx, req.Manifest)
	if err == nil && !has {
		err = session.Errorf(session.CodeInvalid, fmt.Sprintf("tag %s: blob %s is not written", req.Tag, req.Manifest.Digest))
	}
	if err == nil {
		err = l.Tag(ctx, req.Manifest, req.Tag)
	}
	if err != nil {
		if errors.Is(err, ocilayout.ErrInvalid) {
			err = session.Errorf(session.CodeInvalid, err.Error())
		}
		return session.ErrorReply(err)
	}
	return session.SizeReply(0, nil)
}

// Write writes the blob desc names, read from r, into output store store
// of session id, in chunks of at most MaxWriteChunk bytes; the session
// verifies the digest when the last arrives and commits the blob. r must
// yield exactly desc.Size bytes.
//
// Errors: *session.NoSessionError when the session does not answer; failure.ErrNotFound
// for a store it does not let the fleet write; failure.ErrInvalid when the session
// refuses the content (a digest or size other than desc's); r's error; the
// cause of ctx's end; NATS's.
func (c *Client) Write(ctx context.Context, id, store string, desc ocispec.Descriptor, r io.Reader) error {
	if err := session.Validate(id, desc.Digest); err != nil {
		return err
	}
	chunk := int64(MaxWriteChunk)
	if mp := c.c.MaxPayload(); mp > 0 && (mp-4096)*3/4 < chunk {
		chunk = max((mp-4096)*3/4, 1)
	}
	buf := make([]byte, chunk)
	var off int64
	for {
		n, err := io.ReadFull(r, buf[:min(chunk, max(desc.Size-off, 0))])
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("write blob %s: %w", desc.Digest, err)
		}
		if _, err := c.c.Request(ctx, id, OpWrite, WriteRequest{Store: store, Blob: desc, Offset: off, Data: buf[:n]}); err != nil {
			return err
		}
		off += int64(n)
		if off >= desc.Size {
			return nil
		}
		if n == 0 {
			return session.Errorf(session.CodeVerify, fmt.Sprintf("write blob %s: the content ended at %d of %d bytes", desc.Digest, off, desc.Size))
		}
	}
}

// Tag tags manifest in output store store of session id.
//
// Errors: as Write's.
func (c *Client) Tag(ctx context.Context, id, store string, manifest ocispec.Descriptor, tag string) error {
	if err := session.Validate(id, manifest.Digest); err != nil {
		return err
	}
	_, err := c.c.Request(ctx, id, OpTag, TagRequest{Store: store, Manifest: manifest, Tag: tag})
	return err
}
