package source

import (
	"cmp"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// HTTPIdentifier is a parsed http:// or https:// identifier: one file
// downloaded from a URL.
type HTTPIdentifier struct {
	// URL is the URL to download, the identifier itself.
	URL string
	// TLS is true for https://.
	TLS bool
	// Checksum is http.checksum: the digest the content must have. When it
	// is set the key needs no network access. Empty means unknown.
	Checksum digest.Digest
	// FileAttrs name, mode and own the file; an empty Filename means the
	// server's Content-Disposition name or the URL's last path element.
	FileAttrs
	// AuthHeaderSecret is http.authheadersecret: the name of the session
	// secret holding the Authorization header. Empty means the per-host
	// default secrets.
	AuthHeaderSecret string
	// Header holds the http.header.<name> attributes BuildKit keeps
	// (Accept and User-Agent), with canonical names, sorted by name and
	// then value. Nil means none.
	Header []HeaderField
}

// HeaderField is one user-defined request header of an http source.
type HeaderField struct {
	// Name is the canonical header name, e.g. "User-Agent".
	Name string
	// Value is the header value.
	Value string
}

var _ Identifier = (*HTTPIdentifier)(nil)

// Scheme implements Identifier.
func (id *HTTPIdentifier) Scheme() string {
	if id.TLS {
		return SchemeHTTPS
	}
	return SchemeHTTP
}

// String implements Identifier.
func (id *HTTPIdentifier) String() string { return id.URL }

// supportedHTTPHeaders are the http.header.<name> attributes BuildKit keeps;
// any other header is dropped.
var supportedHTTPHeaders = map[string]bool{
	"Accept":     true,
	"User-Agent": true,
}

func init() {
	registerScheme(SchemeSpec{Name: SchemeHTTP, Route: events.ComponentPuller, Content: ContentFile, parse: parseHTTP},
		SchemeSpec{Name: SchemeHTTPS, Route: events.ComponentPuller, Content: ContentFile, parse: parseHTTP})
}

func parseHTTP(scheme, ref string, attrs map[string]string, _ *ocispec.Platform) (Identifier, error) {
	id := &HTTPIdentifier{URL: scheme + "://" + ref, TLS: scheme == SchemeHTTPS}
	for k, v := range attrs {
		switch k {
		case AttrHTTPChecksum:
			d, err := digest.Parse(v)
			if err != nil {
				return nil, invalidCause(err)
			}
			id.Checksum = d
		case AttrHTTPFilename, AttrHTTPPerm, AttrHTTPUID, AttrHTTPGID:
			if err := id.set(k, v); err != nil {
				return nil, err
			}
		case AttrHTTPAuthHeaderSecret:
			id.AuthHeaderSecret = v
		default:
			if name, ok := strings.CutPrefix(k, AttrHTTPHeaderPrefix); ok {
				name = http.CanonicalHeaderKey(name)
				if supportedHTTPHeaders[name] {
					id.Header = append(id.Header, HeaderField{Name: name, Value: v})
				}
			}
		}
	}
	// BuildKit sorts by name only; two attributes that canonicalise to the
	// same name would then come out in map order. Sorting by value as well
	// keeps the key deterministic.
	slices.SortFunc(id.Header, func(a, b HeaderField) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Value, b.Value))
	})
	return id, nil
}

// StatusError is a response of an http source whose status is outside
// 200–399, worded as BuildKit words it: "invalid response status N". It
// matches the class failure.HTTPStatus gives its status:
// failure.ErrUnavailable (retryable) for 5xx, 408 and 429,
// failure.ErrNotFound for 404 and 410, failure.ErrUnauthorized for 401 and
// 403, failure.ErrInvalid for any other.
type StatusError struct {
	// Status is the HTTP status code.
	Status int
}

var _ error = (*StatusError)(nil)

func (e *StatusError) Error() string { return fmt.Sprintf("invalid response status %d", e.Status) }

// Temporary reports whether retrying may help: 5xx, 408 and 429.
func (e *StatusError) Temporary() bool { return failure.HTTPStatus(e.Status).Temporary() }

// Is matches the class of the status.
func (e *StatusError) Is(target error) bool { return failure.HTTPStatus(e.Status).Is(target) }

// HTTPMetadata is what an http source's key depends on besides its
// identifier: what the server sent, or, with http.checksum, what the
// identifier says it will send.
type HTTPMetadata struct {
	// Filename is the name of the file (see FileName).
	Filename string
	// Digest is the content's digest: the checksum when one is given,
	// otherwise the sha256 of the downloaded body.
	Digest digest.Digest
	// LastModified is the response's Last-Modified time. Nil means the
	// response had none (or none that parses), and it is always nil when a
	// checksum is given, because then nothing is requested.
	LastModified *time.Time
}

// StaticMetadata is the metadata of an identifier with http.checksum:
// the checksum and the URL's file name, known without a request. ok is
// false when the identifier has no checksum and its key needs the server.
func (id *HTTPIdentifier) StaticMetadata() (m HTTPMetadata, ok bool) {
	if id.Checksum == "" {
		return HTTPMetadata{}, false
	}
	return HTTPMetadata{Filename: id.FileName(""), Digest: id.Checksum}, true
}

// FileName is the name BuildKit gives the downloaded file: http.filename
// when set; otherwise the filename parameter of the response's
// Content-Disposition header (its last path element, when it is one and
// does not end in "/"); otherwise the last element of the URL's path;
// otherwise "download". contentDisposition is the header's value, empty
// when there was no response (a checksum) or no such header.
func (id *HTTPIdentifier) FileName(contentDisposition string) string {
	if id.Filename != "" {
		return id.Filename
	}
	if contentDisposition != "" {
		if _, params, err := mime.ParseMediaType(contentDisposition); err == nil {
			if name := params["filename"]; name != "" && !strings.HasSuffix(name, "/") {
				if base := path.Base(name); base != "" {
					return base
				}
			}
		}
	}
	if u, err := url.Parse(id.URL); err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" {
			return base
		}
	}
	return "download"
}

// CacheKey is BuildKit's key for the http source with metadata m: the
// sha256 of a JSON document holding the file name, mode, owner, content
// digest, Last-Modified time (http.TimeFormat), auth-header secret name and
// user-defined headers, with BuildKit's field names and order; the last
// three are omitted when empty. The URL is not part of it: the same file
// served from elsewhere has the same key.
func (id *HTTPIdentifier) CacheKey(m HTTPMetadata) digest.Digest {
	lastModified := ""
	if m.LastModified != nil {
		lastModified = m.LastModified.UTC().Format(http.TimeFormat)
	}
	dt, err := json.Marshal(struct {
		Filename         string
		Perm, UID, GID   int
		Checksum         digest.Digest
		LastModTime      string        `json:",omitempty"`
		AuthHeaderSecret string        `json:",omitempty"`
		Header           []HeaderField `json:",omitempty"`
	}{
		Filename:         m.Filename,
		Perm:             id.Perm,
		UID:              id.UID,
		GID:              id.GID,
		Checksum:         m.Digest,
		LastModTime:      lastModified,
		AuthHeaderSecret: id.AuthHeaderSecret,
		Header:           id.Header,
	})
	if err != nil {
		// A struct of strings, ints and string pairs always marshals.
		panic(fmt.Sprintf("source: marshal http key: %v", err))
	}
	return digest.FromBytes(dt)
}

// URLHash identifies what BuildKit revalidates as one download: the
// sha256 of a JSON document holding the URL and http.filename joined by a
// NUL byte, the mode, the owner, the auth-header secret name (omitted when
// empty) and the user-defined headers. Two identifiers with the same
// URLHash send the same request and name the file alike, so the ETags one
// stored answer the other. (BuildKit uses it as an index of its local
// metadata; it never leaves the daemon, so its bytes are not an
// interoperability fact.)
func (id *HTTPIdentifier) URLHash() digest.Digest {
	dt, err := json.Marshal(struct {
		Filename         []byte
		Perm, UID, GID   int
		AuthHeaderSecret string `json:",omitempty"`
		Header           []HeaderField
	}{
		Filename:         []byte(id.URL + "\x00" + id.Filename),
		Perm:             id.Perm,
		UID:              id.UID,
		GID:              id.GID,
		AuthHeaderSecret: id.AuthHeaderSecret,
		Header:           id.Header,
	})
	if err != nil {
		panic(fmt.Sprintf("source: marshal http url hash: %v", err))
	}
	return digest.FromBytes(dt)
}
