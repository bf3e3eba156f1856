package source

import (
	"net/url"
	"strings"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// The secret names BuildKit's LLB client gives every git source (llb.Git):
// the values of git.authtokensecret and git.authheadersecret unless the
// build names others. The source handler itself has no default: a source
// without the attributes reads no secret.
const (
	// DefaultGitAuthTokenSecret is git.authtokensecret's usual value.
	DefaultGitAuthTokenSecret = "GIT_AUTH_TOKEN" //nolint:gosec // G101: a secret's name, not a secret
	// DefaultGitAuthHeaderSecret is git.authheadersecret's usual value.
	DefaultGitAuthHeaderSecret = "GIT_AUTH_HEADER" //nolint:gosec // G101: a secret's name, not a secret
)

// The prefixes of the secrets an http source without
// http.authheadersecret reads, followed by the URL's host name (without
// port): BuildKit's HTTPAuthHeaderSecretPrefix and
// HTTPAuthTokenSecretPrefix.
const (
	// HTTPAuthHeaderSecretPrefix names a secret sent as the whole header.
	HTTPAuthHeaderSecretPrefix = "HTTP_AUTH_HEADER_" //nolint:gosec // G101: a secret's name, not a secret
	// HTTPAuthTokenSecretPrefix names a token sent as "Bearer <token>".
	HTTPAuthTokenSecretPrefix = "HTTP_AUTH_TOKEN_" //nolint:gosec // G101: a secret's name, not a secret
)

// Auth says where the Authorization header of the remote's requests comes
// from, as BuildKit's git source finds it: the secrets git.authheadersecret
// and git.authtokensecret name, each first with "." and the remote's host
// (with its port) appended, then as named, headers before tokens; the
// first the session holds is used, a token as "basic
// base64(x-access-token:<token>)". The header goes to the URLs under the
// remote (under https://github.com/ for a GitHub remote, so its
// submodules there get it too), as BuildKit's
// "http.<scope>.extraheader".
//
// It is nil when the identifier names no secret or the remote is not a
// URL (an scp-like SSH remote), and, as no secret is required, when
// session is empty.
func (id *GitIdentifier) Auth(session string) *events.Auth {
	u, err := url.Parse(id.Remote)
	if err != nil || session == "" || (id.AuthHeaderSecret == "" && id.AuthTokenSecret == "") {
		return nil
	}
	var secrets []events.AuthSecret
	for _, suffix := range []string{"." + u.Host, ""} {
		if id.AuthHeaderSecret != "" {
			secrets = append(secrets, events.AuthSecret{Name: id.AuthHeaderSecret + suffix, Form: events.AuthFormHeader})
		}
		if id.AuthTokenSecret != "" {
			secrets = append(secrets, events.AuthSecret{Name: id.AuthTokenSecret + suffix, Form: events.AuthFormGitToken})
		}
	}
	return &events.Auth{Session: session, Secrets: secrets, Scope: gitTokenScope(id.Remote)}
}

// gitTokenScope is BuildKit's tokenScope: the URL prefix a git source's
// header is sent to. A token is meant for its remote, but on GitHub one
// token usually reads every repository of the build, as actions/checkout
// assumes.
func gitTokenScope(remote string) string {
	for _, prefix := range []string{"https://github.com/", "https://www.github.com/"} {
		if strings.HasPrefix(remote, prefix) {
			return prefix
		}
	}
	return remote
}

// Auth says where the Authorization header of the download comes from, as
// BuildKit's http source finds it. With http.authheadersecret, that one
// secret, sent as the whole header and required: a session that lacks it
// fails the source. Without, the per-host secrets
// HTTP_AUTH_HEADER_<host> (the whole header) and HTTP_AUTH_TOKEN_<host>
// ("Bearer <token>"), neither required; BuildKit sets the header from
// each it finds, so the token wins when the session has both, and Auth
// lists the token first.
//
// It is nil when no secret could apply: no session and none required, or
// a URL without a host name.
func (id *HTTPIdentifier) Auth(session string) *events.Auth {
	if id.AuthHeaderSecret != "" {
		return &events.Auth{Session: session, Secrets: []events.AuthSecret{
			{Name: id.AuthHeaderSecret, Form: events.AuthFormHeader, Required: true},
		}}
	}
	u, err := url.Parse(id.URL)
	if err != nil || u.Hostname() == "" || session == "" {
		return nil
	}
	return &events.Auth{Session: session, Secrets: []events.AuthSecret{
		{Name: HTTPAuthTokenSecretPrefix + u.Hostname(), Form: events.AuthFormBearer},
		{Name: HTTPAuthHeaderSecretPrefix + u.Hostname(), Form: events.AuthFormHeader},
	}}
}
