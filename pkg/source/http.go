package source

import (
	"cmp"
	"net/http"
	"slices"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
	registerParser(parseHTTP, SchemeHTTP, SchemeHTTPS)
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
