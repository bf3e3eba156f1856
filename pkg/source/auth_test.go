package source_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// The secret lookups below are those of BuildKit v0.34.1's sources:
// gitSourceHandler.authSecretNames with tokenScope (source/git/source.go)
// and httpSourceHandler.newHTTPRequest (source/http/source.go), written
// out by hand from reading them.

func TestGitAuth(t *testing.T) {
	t.Parallel()
	header := func(n string) events.AuthSecret { return events.AuthSecret{Name: n, Form: events.AuthFormHeader} }
	token := func(n string) events.AuthSecret { return events.AuthSecret{Name: n, Form: events.AuthFormGitToken} }
	for _, tc := range []struct {
		name       string
		identifier string
		attrs      []string
		session    string
		want       *events.Auth
	}{
		{
			name:       "both names, the host with its port first",
			identifier: "git://127.0.0.1:9418/repo.git",
			attrs:      []string{source.AttrAuthTokenSecret, "GIT_AUTH_TOKEN", source.AttrAuthHeaderSecret, "GIT_AUTH_HEADER"},
			session:    "s1",
			want: &events.Auth{Session: "s1", Scope: "git://127.0.0.1:9418/repo.git", Secrets: []events.AuthSecret{
				header("GIT_AUTH_HEADER.127.0.0.1:9418"), token("GIT_AUTH_TOKEN.127.0.0.1:9418"),
				header("GIT_AUTH_HEADER"), token("GIT_AUTH_TOKEN"),
			}},
		},
		{
			name:       "a token only",
			identifier: "example.com/org/repo.git#v1:sub",
			attrs:      []string{source.AttrAuthTokenSecret, "T"},
			session:    "s1",
			want: &events.Auth{Session: "s1", Scope: "https://example.com/org/repo.git", Secrets: []events.AuthSecret{
				token("T.example.com"), token("T"),
			}},
		},
		{
			name:       "GitHub: every repository there",
			identifier: "github.com/moby/buildkit.git",
			attrs:      []string{source.AttrAuthHeaderSecret, "H"},
			session:    "s1",
			want: &events.Auth{Session: "s1", Scope: "https://github.com/", Secrets: []events.AuthSecret{
				header("H.github.com"), header("H"),
			}},
		},
		{
			name:       "git.fullurl names the remote",
			identifier: "example.com/r",
			attrs:      []string{source.AttrFullRemoteURL, "http://10.0.0.1:8080/r.git", source.AttrAuthTokenSecret, "T"},
			session:    "s1",
			want: &events.Auth{Session: "s1", Scope: "http://10.0.0.1:8080/r.git", Secrets: []events.AuthSecret{
				token("T.10.0.0.1:8080"), token("T"),
			}},
		},
		{name: "no names", identifier: "example.com/r.git", session: "s1"},
		{name: "no session", identifier: "example.com/r.git", attrs: []string{source.AttrAuthTokenSecret, "T"}},
		{name: "an scp-like remote", identifier: "git@example.com:org/r.git", attrs: []string{source.AttrAuthTokenSecret, "T"}, session: "s1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := gitID(t, "git://"+tc.identifier, tc.attrs...).Auth(tc.session)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Auth (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPAuth(t *testing.T) {
	t.Parallel()
	parse := func(t *testing.T, url string, kv ...string) *source.HTTPIdentifier {
		t.Helper()
		id, err := source.Parse(op(url, kv...))
		if err != nil {
			t.Fatal(err)
		}
		return id.(*source.HTTPIdentifier)
	}
	for _, tc := range []struct {
		name    string
		url     string
		attrs   []string
		session string
		want    *events.Auth
	}{
		{
			name: "http.authheadersecret: that one, required", url: "https://example.com:8443/f.tgz",
			attrs: []string{source.AttrHTTPAuthHeaderSecret, "MY_AUTH"}, session: "s1",
			want: &events.Auth{Session: "s1", Secrets: []events.AuthSecret{{Name: "MY_AUTH", Form: events.AuthFormHeader, Required: true}}},
		},
		{
			name: "required even without a session", url: "https://example.com/f",
			attrs: []string{source.AttrHTTPAuthHeaderSecret, "MY_AUTH"},
			want:  &events.Auth{Secrets: []events.AuthSecret{{Name: "MY_AUTH", Form: events.AuthFormHeader, Required: true}}},
		},
		{
			name: "per host, without the port, the token first", url: "https://example.com:8443/f.tgz", session: "s1",
			want: &events.Auth{Session: "s1", Secrets: []events.AuthSecret{
				{Name: "HTTP_AUTH_TOKEN_example.com", Form: events.AuthFormBearer},
				{Name: "HTTP_AUTH_HEADER_example.com", Form: events.AuthFormHeader},
			}},
		},
		{name: "per host, no session", url: "http://example.com/f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, parse(t, tc.url, tc.attrs...).Auth(tc.session)); diff != "" {
				t.Errorf("Auth (-want +got):\n%s", diff)
			}
		})
	}
}
