// Package dirsync is the session protocol through which the fleet reads a
// local directory of the client (local://<name>), as BuildKit's file sync
// does: a listing first (List: Entry values, path, mode, owner, size,
// mtime, link target, filtered with BuildKit's pattern semantics), then
// the content of the files the reader wants (ReadFiles), many small files
// per request and large ones in ranges. A reader that has an unchanged
// copy of a file asks for nothing.
//
// A session serves its directories with a Server in its
// session.Config.Protocols; a reader asks through a Client. The
// subjects are stevedore.session.<id>.list (OpList) and
// stevedore.session.<id>.files (OpFiles). Files are opened through an
// os.Root: nothing outside the directory is served, symlinks included.
//
// Errors: a directory the session does not serve, or a path that does not
// exist, matches failure.ErrNotFound; a path the client may not read, a
// range or a pattern that is not valid, failure.ErrInvalid; a file that
// changed during the transfer, session.ErrVerify.
package dirsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/tonistiigi/fsutil"
	fstypes "github.com/tonistiigi/fsutil/types"

	"github.com/stevedore-dev/stevedore/pkg/session"
)

// Operations on the local directories a session serves.
const (
	// OpList lists a directory: stevedore.session.<id>.list. The request
	// is a ListRequest; the reply's body is a ListReply in JSON.
	OpList = "list"
	// OpFiles reads ranges of files of a directory:
	// stevedore.session.<id>.files. The request is a FilesRequest; the
	// reply's body is the ranges' bytes one after the other, and its
	// HeaderParts says how many bytes each has.
	OpFiles = "files"
)

// HeaderParts is the header of an OpFiles reply holding the length of
// each part of the body, in request order, comma-separated.
const HeaderParts = "Stevedore-Parts"

// Entry is one path of a directory listing, with the metadata a transfer
// restores and compares (fsutil's stat, as BuildKit's file sync sends it).
type Entry struct {
	// Path is slash-separated and relative to the directory.
	Path string `json:"path"`
	// Mode is the fs.FileMode: type and permission bits.
	Mode fs.FileMode `json:"mode"`
	// UID and GID own the path.
	UID uint32 `json:"uid,omitempty"`
	// GID is the path's group.
	GID uint32 `json:"gid,omitempty"`
	// Size is a regular file's size in bytes.
	Size int64 `json:"size,omitempty"`
	// ModTime is the modification time in Unix nanoseconds.
	ModTime int64 `json:"modTime,omitempty"`
	// Linkname is a symlink's target, or, for a regular file, the earlier
	// Path of the listing it is a hard link of.
	Linkname string `json:"linkname,omitempty"`
	// Devmajor and Devminor number a device.
	Devmajor int64 `json:"devmajor,omitempty"`
	// Devminor is a device's minor number.
	Devminor int64 `json:"devminor,omitempty"`
}

// IsHardlink reports whether e is a regular file that is a hard link of
// an earlier entry (Linkname).
func (e Entry) IsHardlink() bool { return e.Mode.IsRegular() && e.Linkname != "" }

// Filter selects the paths of a directory, with BuildKit's pattern
// semantics (fsutil: the local.includepattern, local.excludepatterns and
// local.followpaths attributes).
type Filter struct {
	// IncludePatterns keep only matching paths (and their parents). Nil
	// keeps all.
	IncludePatterns []string `json:"includePatterns,omitempty"`
	// ExcludePatterns drop matching paths; "!" patterns re-include.
	ExcludePatterns []string `json:"excludePatterns,omitempty"`
	// FollowPaths are symlinks resolved into IncludePatterns.
	FollowPaths []string `json:"followPaths,omitempty"`
}

// ListRequest is the body of an OpList request.
type ListRequest struct {
	// Dir is the directory's name in the session (the local source's name).
	Dir string `json:"dir"`
	// Filter selects the paths listed.
	Filter Filter `json:"filter"`
	// After is the last path of the previous page; empty for the first.
	After string `json:"after,omitempty"`
}

// ListReply is the body of an OpList reply: one page of the listing, in
// the order of a walk (lexical, parents before children).
type ListReply struct {
	// Entries are the page's paths.
	Entries []Entry `json:"entries"`
	// More is set when a next page follows (ask again with After set to
	// the last entry's Path).
	More bool `json:"more,omitempty"`
}

// FilesRequest is the body of an OpFiles request.
type FilesRequest struct {
	// Dir is the directory's name in the session.
	Dir string `json:"dir"`
	// Parts are the ranges to read; their Lengths add up to at most
	// session.MaxChunkSize.
	Parts []FilePart `json:"parts"`
}

// FilePart is one range of one file.
type FilePart struct {
	// Path is the file's Entry.Path.
	Path string `json:"path"`
	// Offset is the first byte.
	Offset int64 `json:"offset,omitempty"`
	// Length is how many bytes, at least 1.
	Length int64 `json:"length"`
}

// Stats counts what a session served from its directories.
type Stats struct {
	// Listings counts OpList pages answered.
	Listings int64
	// Files counts the distinct file ranges that started at offset 0:
	// the files whose content was sent.
	Files int64
	// Bytes counts the file bytes sent.
	Bytes int64
}

// Server serves local directories of a session: its OpList and OpFiles.
// It counts what it served.
type Server struct {
	dirs  map[string]string
	mu    sync.Mutex
	stats Stats
}

var _ session.Protocol = (*Server)(nil)

// NewServer returns a Server of dirs, the local directories a session
// serves by name (the local source's name, local://<name>), each a path on
// this machine. Nil serves none: every directory is not found.
//
// Errors: a path that is not a directory.
func NewServer(dirs map[string]string) (*Server, error) {
	for name, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("session: local directory %q: %s is not a directory", name, dir)
		}
	}
	return &Server{dirs: dirs}, nil
}

// Ops implements session.Protocol: OpList and OpFiles.
func (s *Server) Ops() []string { return []string{OpList, OpFiles} }

// Answer implements session.Protocol.
func (s *Server) Answer(ctx context.Context, req session.Request) *nats.Msg {
	if req.Op == OpList {
		return s.list(ctx, req)
	}
	return s.files(req)
}

func (s *Server) count(listings, files, bytes int64) {
	s.mu.Lock()
	s.stats.Listings += listings
	s.stats.Files += files
	s.stats.Bytes += bytes
	s.mu.Unlock()
}

// Stats returns what the server served from its directories so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// dirRoot returns the path of directory name.
func (s *Server) dirRoot(id, name string) (string, error) {
	root, ok := s.dirs[name]
	if !ok {
		return "", session.Errorf(session.CodeNotFound, fmt.Sprintf("session %s has no local directory %q", id, name))
	}
	return root, nil
}

// list answers OpList: the walk's entries after req.After, as many as
// fit in a chunk.
func (s *Server) list(ctx context.Context, r session.Request) *nats.Msg {
	var req ListRequest
	if err := json.Unmarshal(r.Data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: list request: %v", r.Session, err)))
	}
	root, err := s.dirRoot(r.Session, req.Dir)
	if err != nil {
		return session.ErrorReply(err)
	}
	budget := r.Limit
	var page ListReply
	var used int64
	errFull := errors.New("page full")
	opt := &fsutil.FilterOpt{IncludePatterns: req.Filter.IncludePatterns, ExcludePatterns: req.Filter.ExcludePatterns, FollowPaths: req.Filter.FollowPaths}
	err = fsutil.Walk(ctx, root, opt, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		p = filepathToSlash(p)
		if req.After != "" && !walkAfter(p, req.After) {
			return nil
		}
		e, err := entryOf(p, fi)
		if err != nil {
			return err
		}
		// An entry in JSON: its strings plus some 120 bytes of names
		// and numbers.
		size := int64(len(e.Path)+len(e.Linkname)) + 160
		if used+size > budget && len(page.Entries) > 0 {
			page.More = true
			return errFull
		}
		used += size
		page.Entries = append(page.Entries, e)
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return session.ErrorReply(session.Errorf(codeOf(err), fmt.Sprintf("session %s: list %q: %v", r.Session, req.Dir, err)))
	}
	body, err := json.Marshal(page)
	if err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInternal, err.Error()))
	}
	s.count(1, 0, 0)
	return &nats.Msg{Header: nats.Header{session.HeaderSize: []string{strconv.Itoa(len(body))}}, Data: body}
}

// walkAfter reports whether p comes after last in the walk's order, which
// is lexical per directory: compare element by element.
func walkAfter(p, last string) bool {
	pe, le := strings.Split(p, "/"), strings.Split(last, "/")
	for i := 0; i < len(pe) && i < len(le); i++ {
		if pe[i] != le[i] {
			return pe[i] > le[i]
		}
	}
	return len(pe) > len(le)
}

func filepathToSlash(p string) string { return strings.ReplaceAll(p, string(os.PathSeparator), "/") }

// entryOf is the Entry of one walked path.
func entryOf(p string, fi fs.FileInfo) (Entry, error) {
	st, ok := fi.Sys().(*fstypes.Stat)
	if !ok {
		return Entry{}, fmt.Errorf("%s: no file stat", p)
	}
	return Entry{
		Path: p, Mode: fs.FileMode(st.Mode), UID: st.Uid, GID: st.Gid, Size: st.Size, ModTime: st.ModTime,
		Linkname: filepathToSlash(st.Linkname), Devmajor: st.Devmajor, Devminor: st.Devminor,
	}, nil
}

// files answers OpFiles.
func (s *Server) files(sr session.Request) *nats.Msg {
	var req FilesRequest
	if err := json.Unmarshal(sr.Data, &req); err != nil {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("session %s: files request: %v", sr.Session, err)))
	}
	root, err := s.dirRoot(sr.Session, req.Dir)
	if err != nil {
		return session.ErrorReply(err)
	}
	var total int64
	for _, p := range req.Parts {
		if p.Offset < 0 || p.Length <= 0 {
			return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("file %q: range %d+%d", p.Path, p.Offset, p.Length)))
		}
		total += p.Length
	}
	if total > sr.Limit {
		return session.ErrorReply(session.Errorf(session.CodeInvalid, fmt.Sprintf("files request of %d bytes: more than %d", total, sr.Limit)))
	}
	// os.Root keeps every open inside the directory, symlinks included.
	r, err := os.OpenRoot(root)
	if err != nil {
		return session.ErrorReply(session.Errorf(session.CodeNotFound, fmt.Sprintf("session %s: local directory %q: %v", sr.Session, req.Dir, err)))
	}
	defer func() { _ = r.Close() }()
	body := make([]byte, 0, total)
	lengths := make([]string, len(req.Parts))
	var started int64
	for i, p := range req.Parts {
		n, err := readPart(r, p, body[len(body):len(body)+int(p.Length)])
		if err != nil {
			return session.ErrorReply(err)
		}
		body = body[:len(body)+n]
		lengths[i] = strconv.Itoa(n)
		if p.Offset == 0 {
			started++
		}
	}
	s.count(0, started, int64(len(body)))
	return &nats.Msg{Header: nats.Header{HeaderParts: []string{strings.Join(lengths, ",")}, session.HeaderSize: []string{strconv.Itoa(len(body))}}, Data: body}
}

// readPart reads p into buf (len p.Length) and returns how many bytes the
// file had there: fewer at its end.
func readPart(r *os.Root, p FilePart, buf []byte) (int, error) {
	clean := path.Clean("/" + p.Path)[1:]
	if clean == "" || clean != p.Path {
		return 0, session.Errorf(session.CodeInvalid, fmt.Sprintf("file %q: not a clean relative path", p.Path))
	}
	f, err := r.Open(clean)
	if err != nil {
		return 0, session.Errorf(codeOf(err), fmt.Sprintf("file %q: %v", p.Path, err))
	}
	defer func() { _ = f.Close() }()
	n, err := f.ReadAt(buf, p.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, session.Errorf(session.CodeInternal, fmt.Sprintf("file %q: read: %v", p.Path, err))
	}
	return n, nil
}

// Client reads the local directories of sessions.
type Client struct {
	c *session.Client
}

// NewClient returns a Client that sends its requests through c.
func NewClient(c *session.Client) *Client { return &Client{c: c} }

// List returns the whole listing of directory dir of session id, filtered
// by f, page by page.
//
// Errors: *session.NoSessionError when the session does not answer; failure.ErrNotFound
// for a directory it does not serve; failure.ErrInvalid for a malformed id; the
// cause of ctx's end; NATS's.
func (c *Client) List(ctx context.Context, id, dir string, f Filter) ([]Entry, error) {
	if err := session.ValidateID(id); err != nil {
		return nil, err
	}
	var all []Entry
	req := ListRequest{Dir: dir, Filter: f}
	for {
		m, err := c.c.Request(ctx, id, OpList, req)
		if err != nil {
			return nil, err
		}
		body := m.Data
		var page ListReply
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, session.Errorf(session.CodeInternal, fmt.Sprintf("session %s: list reply: %v", id, err))
		}
		all = append(all, page.Entries...)
		if !page.More {
			return all, nil
		}
		if len(page.Entries) == 0 {
			return nil, session.Errorf(session.CodeInternal, fmt.Sprintf("session %s: an empty listing page with more to come", id))
		}
		req.After = page.Entries[len(page.Entries)-1].Path
	}
}

// FileWriter receives the content of the files ReadFiles reads: each
// file's bytes in order, in chunks at increasing offsets, and then done
// once the whole Size arrived.
type FileWriter interface {
	// WriteAt is off bytes into file e: data.
	WriteAt(e Entry, data []byte, off int64) error
	// Done is called once e's Size bytes were written.
	Done(e Entry) error
}

// ReadFiles reads the content of files (regular entries of a listing
// with a Size above 0) from directory dir of session id into w: many
// small files per request, large ones in chunks, WithReadAhead requests
// in flight. w is called from one goroutine, in the order of files.
//
// Errors: those of List; session.ErrVerify when a file is shorter than its
// listed size (it changed during the transfer); w's.
func (c *Client) ReadFiles(ctx context.Context, id, dir string, files []Entry, w FileWriter) error {
	if err := session.ValidateID(id); err != nil {
		return err
	}
	batches := planBatches(files, c.c.ChunkSize())
	ctx, cancel := context.WithCancelCause(ctx)
	type result struct {
		body  []byte
		parts []int
		err   error
	}
	results := make([]chan result, len(batches))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	// sem holds a slot per request issued and not yet consumed.
	sem := make(chan struct{}, c.c.ReadAhead())
	var wg sync.WaitGroup
	defer func() { cancel(errDone); wg.Wait() }()
	wg.Go(func() {
		for i, b := range batches {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				body, parts, err := c.requestFiles(ctx, id, dir, b)
				results[i] <- result{body: body, parts: parts, err: err}
			})
		}
	})
	for i, b := range batches {
		var res result
		select {
		case res = <-results[i]:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		<-sem
		if res.err != nil {
			return res.err
		}
		off := 0
		for j, p := range b {
			if res.parts[j] != int(p.part.Length) {
				return session.Errorf(session.CodeVerify, fmt.Sprintf("file %q of %q in session %s: %d bytes at offset %d, want %d: it changed during the transfer", p.entry.Path, dir, id, res.parts[j], p.part.Offset, p.part.Length))
			}
			data := res.body[off : off+res.parts[j]]
			off += res.parts[j]
			if err := w.WriteAt(p.entry, data, p.part.Offset); err != nil {
				return err
			}
			if p.part.Offset+p.part.Length == p.entry.Size {
				if err := w.Done(p.entry); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// errDone is the cause given to ReadFiles' requests when it returns.
var errDone = errors.New("session files read done")

// batchPart is one range of one file in a batch.
type batchPart struct {
	entry Entry
	part  FilePart
}

// planBatches cuts the files' content into requests of at most chunk
// bytes: small files together, large ones in several ranges.
func planBatches(files []Entry, chunk int64) [][]batchPart {
	var out [][]batchPart
	var cur []batchPart
	var used int64
	for _, e := range files {
		for off := int64(0); off < e.Size; {
			if used == chunk {
				out, cur, used = append(out, cur), nil, 0
			}
			n := min(e.Size-off, chunk-used)
			cur = append(cur, batchPart{entry: e, part: FilePart{Path: e.Path, Offset: off, Length: n}})
			used += n
			off += n
		}
		// Many tiny files: bound the parts of one request too.
		if len(cur) >= maxPartsPerRequest {
			out, cur, used = append(out, cur), nil, 0
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// maxPartsPerRequest bounds the files of one OpFiles request, so that
// its JSON stays well below the payload limit.
const maxPartsPerRequest = 256

// requestFiles sends one OpFiles request and splits its reply.
func (c *Client) requestFiles(ctx context.Context, id, dir string, b []batchPart) ([]byte, []int, error) {
	req := FilesRequest{Dir: dir, Parts: make([]FilePart, len(b))}
	for i, p := range b {
		req.Parts[i] = p.part
	}
	m, err := c.c.Request(ctx, id, OpFiles, req)
	if err != nil {
		return nil, nil, err
	}
	fields := strings.Split(m.Header.Get(HeaderParts), ",")
	if len(fields) != len(b) {
		return nil, nil, session.Errorf(session.CodeInternal, fmt.Sprintf("session %s: files reply with %d parts, want %d", id, len(fields), len(b)))
	}
	parts := make([]int, len(fields))
	total := 0
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || int64(n) > b[i].part.Length {
			return nil, nil, session.Errorf(session.CodeInternal, fmt.Sprintf("session %s: files reply: bad part length %q", id, f))
		}
		parts[i] = n
		total += n
	}
	if total != len(m.Data) {
		return nil, nil, session.Errorf(session.CodeInternal, fmt.Sprintf("session %s: files reply of %d bytes, parts say %d", id, len(m.Data), total))
	}
	return m.Data, parts, nil
}
