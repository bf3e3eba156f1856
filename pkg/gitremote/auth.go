package gitremote

import (
	"net/http"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Auth is the Authorization header that listings and fetches send to
// http and https remotes: BuildKit's git "http.<scope>.extraheader". The
// zero Auth sends none. It never appears in an error or a log: String
// says only that a header is set.
type Auth struct {
	// Header is the header's whole value ("basic …", "Bearer …"); empty
	// sends none.
	Header string
	// Scope limits the remotes the header goes to: those whose URL starts
	// with it (the source's remote, or https://github.com/ for all of
	// GitHub, submodules included). Empty means every remote.
	Scope string
}

// AuthOf is the Auth a source's fetches send: header, to the remotes in
// a's scope (every remote for a nil a, which has none).
func AuthOf(header string, a *events.Auth) Auth {
	auth := Auth{Header: header}
	if a != nil {
		auth.Scope = a.Scope
	}
	return auth
}

// method is the go-git auth method of a request to remote: nil when a
// has no header, remote is outside its scope, or it is not an http or
// https remote (git:// has no headers).
func (a Auth) method(remote string) transport.AuthMethod {
	lower := strings.ToLower(remote)
	web := strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://")
	if a.Header == "" || !strings.HasPrefix(remote, a.Scope) || !web {
		return nil
	}
	return headerAuth(a.Header)
}

// headerAuth sends an Authorization header as it is.
type headerAuth string

var _ githttp.AuthMethod = headerAuth("")

// Name implements transport.AuthMethod.
func (headerAuth) Name() string { return "http-authorization-header" }

// String implements transport.AuthMethod without the secret.
func (headerAuth) String() string { return "http-authorization-header: <redacted>" }

// SetAuth implements githttp.AuthMethod.
func (h headerAuth) SetAuth(r *http.Request) { r.Header.Set("Authorization", string(h)) }
