package registrytest

import (
	"net/http"
	"net/url"
	"strings"
)

// Request kinds, from the path of a distribution API request.
const (
	// KindManifest is /v2/<repo>/manifests/<tag or digest>.
	KindManifest = "manifest"
	// KindBlob is /v2/<repo>/blobs/<digest>.
	KindBlob = "blob"
	// KindUpload is /v2/<repo>/blobs/uploads/ and
	// /v2/<repo>/blobs/uploads/<id>: starting, continuing or finishing a
	// blob upload.
	KindUpload = "upload"
	// KindTags is /v2/<repo>/tags/list.
	KindTags = "tags"
	// KindOther is everything else: the /v2/ ping, the catalog, referrers.
	KindOther = "other"
)

// Request is one HTTP request the registry answered (pushes made by this
// package are not recorded).
type Request struct {
	// Method is the HTTP method, such as "GET" or "HEAD".
	Method string
	// Path is the URL path without the query.
	Path string
	// Query is the raw query string, without the "?" and as the client
	// encoded it: "mount=sha256:…&from=cache/a" for a cross-repository
	// mount, "digest=sha256:…" for the PUT that completes an upload. It is
	// empty when the request had none.
	Query string
	// Kind is one of the Kind constants.
	Kind string
	// Repo is the repository name, such as "fixture/single"; empty for
	// KindOther requests that name none.
	Repo string
	// Ref is the tag or digest of a manifest request, the digest of a blob
	// request, or the upload id of an upload request (empty when starting
	// one). It is empty for other kinds.
	Ref string
	// Status is the HTTP status the client got, including injected faults
	// and auth challenges.
	Status int
	// UserAgent is the request's User-Agent header, which tells clients
	// apart when several share the registry ("buildkit/v0.34.1",
	// "containerd/1.6.20"); empty when it had none.
	UserAgent string
}

// parsePath classifies a request by its path.
func parsePath(method, path string) Request {
	req := Request{Method: method, Path: path, Kind: KindOther}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return req
	}
	seg := strings.Split(rest, "/")
	n := len(seg)
	set := func(kind string, repoEnd int, ref string) Request {
		if repoEnd < 1 {
			return req
		}
		req.Kind, req.Repo, req.Ref = kind, strings.Join(seg[:repoEnd], "/"), ref
		return req
	}
	switch {
	case n >= 4 && seg[n-3] == "blobs" && seg[n-2] == "uploads":
		return set(KindUpload, n-3, seg[n-1])
	case n >= 3 && seg[n-2] == "blobs" && seg[n-1] == "uploads":
		return set(KindUpload, n-2, "")
	case n >= 3 && seg[n-2] == "manifests":
		return set(KindManifest, n-2, seg[n-1])
	case n >= 3 && seg[n-2] == "blobs":
		return set(KindBlob, n-2, seg[n-1])
	case n >= 3 && seg[n-2] == "tags" && seg[n-1] == "list":
		return set(KindTags, n-2, "")
	case n >= 3 && seg[n-2] == "referrers":
		req.Repo = strings.Join(seg[:n-2], "/")
		req.Ref = seg[n-1]
		return req
	}
	return req
}

// Requests returns a copy of the requests recorded since New or the last
// Reset, oldest first.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Request, len(r.requests))
	copy(out, r.requests)
	return out
}

// Count returns how many recorded requests had this method and kind (one
// of the Kind constants). An empty method or kind matches any.
func (r *Registry) Count(method, kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, req := range r.requests {
		if (method == "" || req.Method == method) && (kind == "" || req.Kind == kind) {
			n++
		}
	}
	return n
}

// Counts returns the recorded requests counted by "<METHOD> <kind>", for
// example {"GET manifest": 1, "HEAD blob": 2}, ready for cmp.Diff. Pairs
// with no requests are absent.
func (r *Registry) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int)
	for _, req := range r.requests {
		out[req.Method+" "+req.Kind]++
	}
	return out
}

// Reset forgets every recorded request. Fault rules are kept.
func (r *Registry) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// Uploads returns the recorded requests that carried blob content, oldest
// first: PATCH and PUT of /v2/<repo>/blobs/uploads/<id> (a chunk, and the
// PUT with ?digest= that completes an upload), and a monolithic POST of
// /v2/<repo>/blobs/uploads/?digest=…. Starting an upload session or
// mounting a blob sends no content and is not among them. Failed requests
// are included; their Status says how each ended (201 Created for a
// completed upload).
func (r *Registry) Uploads() []Request {
	return r.filter(func(req Request) bool {
		if req.Kind != KindUpload {
			return false
		}
		switch req.Method {
		case http.MethodPatch, http.MethodPut:
			return true
		case http.MethodPost:
			return queryHas(req.Query, "digest")
		}
		return false
	})
}

// Mounts returns the recorded cross-repository mount requests, oldest
// first: POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<source>.
// Status is 201 Created when the blob was mounted, 202 Accepted when the
// registry started an upload session instead (the source did not hold the
// blob), or an auth challenge or injected fault.
func (r *Registry) Mounts() []Request {
	return r.filter(func(req Request) bool {
		return req.Kind == KindUpload && req.Method == http.MethodPost && queryHas(req.Query, "mount")
	})
}

// filter returns the recorded requests keep accepts, oldest first.
func (r *Registry) filter(keep func(Request) bool) []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Request
	for _, req := range r.requests {
		if keep(req) {
			out = append(out, req)
		}
	}
	return out
}

// queryHas reports whether a raw query string has a non-empty parameter
// name.
func queryHas(rawQuery, name string) bool {
	q, err := url.ParseQuery(rawQuery)
	return err == nil && q.Get(name) != ""
}
