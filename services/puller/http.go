package puller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// HTTPClient sends the requests of http and https sources.
type HTTPClient interface {
	// Do sends req and returns its response; an error means no response
	// (network, TLS, too many redirects).
	Do(req *http.Request) (*http.Response, error)
}

var _ HTTPClient = (*http.Client)(nil)

// newHTTPClient is the default client of http sources: the environment's
// proxy, a bound on the wait for response headers, no bound on a body
// that keeps coming.
func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t}
}

// maxKnownETags bounds the ETags kept (and sent in If-None-Match) per URL.
const maxKnownETags = 16

// httpState is what events.BucketHTTP holds for one URL hash: the fleet's
// memory of what the URL served.
type httpState struct {
	// CheckedAt is when the revalidation that wrote the state started; a
	// request made after it revalidates again.
	CheckedAt time.Time `json:"checkedAt"`
	// Current is what the URL served then.
	Current httpEntry `json:"current"`
	// Known are the responses with an ETag seen for the URL, newest first,
	// at most maxKnownETags: what If-None-Match offers.
	Known []httpEntry `json:"known,omitempty"`
}

// httpEntry is one response of an http source.
type httpEntry struct {
	// ETag is the response's ETag header as sent; empty when it had none.
	ETag string `json:"etag,omitempty"`
	// Digest is the sha256 of the body.
	Digest digest.Digest `json:"digest"`
	// Size is the body's length in bytes.
	Size int64 `json:"size"`
	// LastModified is the response's Last-Modified time; nil when it had
	// none.
	LastModified *time.Time `json:"lastModified,omitempty"`
	// Filename is the file name the response gave (see
	// source.HTTPIdentifier.FileName).
	Filename string `json:"filename"`
}

// httpKey is the one key of an http or https source, BuildKit's: with
// http.checksum it needs no request; otherwise the fleet revalidates what
// it knows of the URL (revalidate) and, when that is stale, downloads the
// file to hash it. The key is pinned to the content digest.
//
// The puller downloads to hash, as BuildKit does during CacheKey. With
// WithDownloads it keeps the bytes in a layout directory that the file's
// first location names, so a snapshotter that sees the directory reads
// them there; otherwise (or when they are gone) the snapshotter downloads
// the URL again. Either way it verifies the digest (and size) the key was
// computed from. The bytes never travel through the bus.
func (h *Handler) httpKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	src := id.(*source.HTTPIdentifier)
	if in.Index != 0 {
		return nil, failure.Invalid(fmt.Errorf("%s has no cache key index %d", src.Scheme(), in.Index))
	}
	meta, static := src.StaticMetadata()
	auth := src.Auth(in.Session)
	size := int64(-1)
	sight := &sighted{identity: src.URL, seen: events.Sighting{Tag: src.URL}}
	if !static {
		header, err := h.authorization(ctx, auth)
		if err != nil {
			return nil, err
		}
		sight.private = header != ""
		cur, err := h.revalidate(ctx, src, header, requestedAt(ctx, h.now()))
		if err != nil {
			return nil, err
		}
		meta = source.HTTPMetadata{Filename: cur.Filename, Digest: cur.Digest, LastModified: cur.LastModified}
		size = cur.Size
		sight.seen.ETag, sight.seen.LastModified = cur.ETag, cur.LastModified
	}
	key := src.CacheKey(meta).String()
	ck := events.CacheKey{Index: 0, Key: key, Digest: source.SolverDigest(key), Pin: meta.Digest.String(), Done: true}
	file := httpFile(src, meta, size)
	file.Auth = auth
	if h.downloads != nil {
		// Where this replica kept the bytes when it downloaded them; the
		// URL otherwise.
		file.Locations = []events.BlobLocation{h.downloads.location()}
	}
	return h.contentKey(ctx, in, ck, &events.Content{File: file}, sight)
}

// httpFile is the file an http source snapshots: its name as the key has
// it, mode http.perm or 0600, owned by http.uid:http.gid, mtime the
// response's Last-Modified (the Unix epoch when unknown, which it is with
// a checksum), downloaded from the URL with the source's headers.
func httpFile(src *source.HTTPIdentifier, meta source.HTTPMetadata, size int64) *events.FileContent {
	var headers []events.Header
	for _, hf := range src.Header {
		headers = append(headers, events.Header{Name: hf.Name, Value: hf.Value})
	}
	return &events.FileContent{
		Name:    meta.Filename,
		Perm:    int64(src.Mode()),
		UID:     int64(src.UID),
		GID:     int64(src.GID),
		ModTime: meta.LastModified,
		Digest:  meta.Digest,
		Size:    size,
		URL:     src.URL,
		Headers: headers,
	}
}

// revalidate returns what the URL serves, asking it once across the fleet
// for all requests made before the asking started: a replica takes the
// URL's lease, offers the ETags the fleet knows (HEAD, then GET, with
// If-None-Match), and downloads only when none of them matches. The new
// state, with the ETag memory, is what the flight stores.
//
// A request with an Authorization header (from the build's secrets) asks
// the URL itself, with the ETags the fleet knows, and shares no answer:
// a build without credentials never takes one made with them as its
// own. What it learns joins the ETag memory only (an ETag and its
// digest), so a later request with credentials revalidates without a
// download too.
func (h *Handler) revalidate(ctx context.Context, src *source.HTTPIdentifier, header string, since time.Time) (httpEntry, error) {
	key := "http." + src.URLHash().Encoded()
	if header != "" {
		return h.revalidateAlone(ctx, src, key, header)
	}
	accept := func(v []byte) bool {
		var s httpState
		return json.Unmarshal(v, &s) == nil && !s.CheckedAt.Before(since)
	}
	res, err := h.httpShared.Do(ctx, key, accept, func(ctx context.Context) ([]byte, error) {
		started := h.now()
		prev, err := h.httpState(ctx, key)
		if err != nil {
			return nil, err
		}
		cur, err := h.fetchHTTP(ctx, src, "", prev.Known)
		if err != nil {
			return nil, err
		}
		return json.Marshal(httpState{CheckedAt: started, Current: cur, Known: remember(prev.Known, cur)})
	})
	if err != nil {
		return httpEntry{}, err
	}
	var s httpState
	if err := json.Unmarshal(res.Value, &s); err != nil {
		return httpEntry{}, fmt.Errorf("stored http state of %s: %w", src.URL, err)
	}
	return s.Current, nil
}

// revalidateAlone is revalidate with credentials.
func (h *Handler) revalidateAlone(ctx context.Context, src *source.HTTPIdentifier, key, header string) (httpEntry, error) {
	prev, err := h.httpState(ctx, key)
	if err != nil {
		return httpEntry{}, err
	}
	cur, err := h.fetchHTTP(ctx, src, header, prev.Known)
	if err != nil || cur.ETag == "" {
		return cur, err
	}
	// Only the memory changes: CheckedAt and Current stay what they were,
	// so no request without credentials accepts this as its answer. A
	// memory that cannot be written costs a download later, nothing more.
	_ = h.httpShared.Update(ctx, key, func(old []byte, found bool) ([]byte, error) {
		var s httpState
		if found {
			_ = json.Unmarshal(old, &s) // an unreadable state is no state
		}
		s.Known = remember(s.Known, cur)
		return json.Marshal(s)
	})
	return cur, nil
}

// httpState is what the fleet stores of the URL under key; the zero
// state when there is none, or none that reads.
func (h *Handler) httpState(ctx context.Context, key string) (httpState, error) {
	var s httpState
	v, found, err := h.httpShared.Get(ctx, key)
	if err != nil {
		return s, failure.Unavailable(err)
	}
	if found {
		_ = json.Unmarshal(v, &s) // an unreadable state is no state
	}
	return s, nil
}

// remember puts cur first among the known responses when it has an ETag,
// dropping an older entry with the same ETag and the oldest beyond
// maxKnownETags.
func remember(known []httpEntry, cur httpEntry) []httpEntry {
	if cur.ETag == "" {
		return known
	}
	out := []httpEntry{cur}
	for _, e := range known {
		if len(out) == maxKnownETags {
			break
		}
		if e.ETag != "" && etagValue(e.ETag) != etagValue(cur.ETag) {
			out = append(out, e)
		}
	}
	return out
}

// etagValue is an ETag without its weakness mark, for comparisons.
func etagValue(v string) string { return strings.TrimPrefix(v, "W/") }

// fetchHTTP asks the URL what it serves, as BuildKit's http source does:
// with known ETags, a HEAD with If-None-Match (and Accept-Encoding: gzip)
// whose 200 or 304 with a known ETag answers without a download; then a
// GET with If-None-Match, whose 304 names a known ETag, or whose body is
// streamed through sha256 and dropped.
func (h *Handler) fetchHTTP(ctx context.Context, src *source.HTTPIdentifier, header string, known []httpEntry) (httpEntry, error) {
	byTag := map[string]httpEntry{}
	var etags []string
	for _, e := range known {
		if v := etagValue(e.ETag); v != "" {
			if _, dup := byTag[v]; !dup {
				byTag[v] = e
				etags = append(etags, e.ETag)
			}
		}
	}
	if len(etags) > 0 {
		if e, ok := h.headMatches(ctx, src, header, etags, byTag); ok {
			return e, nil
		}
	}
	req, err := newHTTPRequest(ctx, http.MethodGet, src, header, etags)
	if err != nil {
		return httpEntry{}, err
	}
	resp, err := h.httpClient.Do(req)
	if err != nil {
		return httpEntry{}, failure.Unavailable(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return httpEntry{}, &source.StatusError{Status: resp.StatusCode}
	}
	name := src.FileName(resp.Header.Get("Content-Disposition"))
	if resp.StatusCode == http.StatusNotModified {
		tag := etagValue(resp.Header.Get("ETag"))
		if tag == "" && len(etags) == 1 {
			tag = etagValue(etags[0])
		}
		e, ok := byTag[tag]
		if !ok {
			return httpEntry{}, failure.Invalid(fmt.Errorf("invalid not-modified ETag: %v", tag))
		}
		e.Filename = name
		return e, nil
	}
	d := digest.SHA256.Digester()
	body := newDownloadProgress(ctx, resp.Body, src.URL, "download "+src.URL, resp.ContentLength)
	var sp *spool
	if h.downloads != nil {
		sp = h.downloads.newSpool()
	}
	n, err := io.Copy(io.MultiWriter(d.Hash(), sp.writer()), body)
	if err != nil {
		sp.discard()
		return httpEntry{}, failure.Unavailable(fmt.Errorf("download %s: %w", src.URL, err))
	}
	body.done()
	if h.downloads != nil {
		h.downloads.keep(ctx, sp, ocispec.Descriptor{Digest: d.Digest(), Size: n})
	}
	e := httpEntry{ETag: resp.Header.Get("ETag"), Digest: d.Digest(), Size: n, Filename: name}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		t = t.UTC()
		e.LastModified = &t
	}
	return e, nil
}

// headMatches sends the HEAD of a revalidation; ok reports a 200 or 304
// with one of the known ETags (a 304 without one, when only one was
// offered, means that one). Any other answer, or none, leaves it to the
// GET.
func (h *Handler) headMatches(ctx context.Context, src *source.HTTPIdentifier, header string, etags []string, byTag map[string]httpEntry) (httpEntry, bool) {
	req, err := newHTTPRequest(ctx, http.MethodHead, src, header, etags)
	if err != nil {
		return httpEntry{}, false
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := h.httpClient.Do(req)
	if err != nil {
		return httpEntry{}, false
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotModified {
		return httpEntry{}, false
	}
	tag := etagValue(resp.Header.Get("ETag"))
	if tag == "" && len(etags) == 1 && resp.StatusCode == http.StatusNotModified {
		tag = etagValue(etags[0])
	}
	e, ok := byTag[tag]
	if !ok {
		return httpEntry{}, false
	}
	e.Filename = src.FileName(resp.Header.Get("Content-Disposition"))
	return e, true
}

// newHTTPRequest is a request of src with its user-defined headers (only
// BuildKit's allowed ones survive parsing), authorization when set (Go's
// client drops it on a redirect to another host) and, when etags are
// known, If-None-Match.
func newHTTPRequest(ctx context.Context, method string, src *source.HTTPIdentifier, authorization string, etags []string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, src.URL, nil)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	for _, hf := range src.Header {
		req.Header.Set(hf.Name, hf.Value)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if len(etags) > 0 {
		req.Header.Set("If-None-Match", strings.Join(etags, ", "))
	}
	return req, nil
}
