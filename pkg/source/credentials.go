package source

import (
	"strings"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// RefuseCredentials fails (ErrInvalid) when op carries credentials in a
// URL: a password in the identifier's URL or in git.fullurl
// (http://user:pw@…, git://user:pw@…), or any user at all in an http or
// https URL (https://token@…). Whatever a build names is stored in the
// events stream for every watcher to read and copied to the dead-letter
// stream, so the client refuses such a source before it publishes it, and
// the resolver refuses it too, without repeating the URL. Credentials
// belong in the client's session as secrets (git.authtokensecret,
// git.authheadersecret, http.authheadersecret). A user without a password
// in a git or ssh URL (git@host) is a login name and passes.
func RefuseCredentials(op events.SourceOp) error {
	if credentialsIn(op.Identifier) {
		return &Error{Msg: "the source's URL carries credentials; give them as a client secret instead (they would be stored in the build's events)", Err: ErrInvalid}
	}
	if credentialsIn(op.Attrs[AttrFullRemoteURL]) {
		return &Error{Msg: AttrFullRemoteURL + " carries credentials; give them as a client secret instead (they would be stored in the build's events)", Err: ErrInvalid}
	}
	return nil
}

// credentialsIn reports whether raw is a URL (http, https, git, ssh)
// whose authority holds a password, or a user for http and https.
func credentialsIn(raw string) bool {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "http", "https", "git", "ssh":
	default:
		return false // docker-image://name:tag@digest is no URL
	}
	authority := rest
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	i := strings.LastIndex(authority, "@")
	if i < 0 {
		return false
	}
	return strings.Contains(authority[:i], ":") || scheme == "http" || scheme == "https"
}

// WithoutCredentials is op with the user and password taken out of its
// identifier's URL and git.fullurl: what may be repeated in an event.
func WithoutCredentials(op events.SourceOp) events.SourceOp {
	out := op
	out.Identifier = stripUserInfo(op.Identifier)
	if v, ok := op.Attrs[AttrFullRemoteURL]; ok {
		out.Attrs = make(map[string]string, len(op.Attrs))
		for k, a := range op.Attrs {
			out.Attrs[k] = a
		}
		out.Attrs[AttrFullRemoteURL] = stripUserInfo(v)
	}
	return out
}

func stripUserInfo(raw string) string {
	if !credentialsIn(raw) {
		return raw
	}
	scheme, rest, _ := strings.Cut(raw, "://")
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	at := strings.LastIndex(rest[:end], "@")
	return scheme + "://" + rest[at+1:]
}
