package gitremote_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/gitremote"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
)

const (
	privateHeader = "basic eC1hY2Nlc3MtdG9rZW46czNjcjN0" // x-access-token:s3cr3t
	otherHeader   = "Bearer other"
)

// privateServer serves "private.git", which wants privateHeader, with a
// submodule "lib.git" on the same server that wants nothing, and
// "vault.git", whose own submodule "private.git" wants privateHeader too.
type privateServer struct {
	web         *gitremotetest.HTTP
	commit, lib string
	vault       string
}

func newPrivateServer(t *testing.T) *privateServer {
	t.Helper()
	root := gitremotetest.NewRoot(t)
	p := &privateServer{web: gitremotetest.ServeHTTP(t, root)}
	lib := gitremotetest.NewWork(t)
	lib.Write("lib.txt", "public lib\n", 0o644)
	p.lib = lib.Commit("lib")
	lib.Push(root, "lib")
	w := gitremotetest.NewWork(t)
	w.Write("secret.txt", "private\n", 0o644)
	w.Submodule("lib", "../lib.git", p.lib)
	p.commit = w.Commit("private")
	w.Push(root, "private")
	v := gitremotetest.NewWork(t)
	v.Submodule("inner", "../private.git", p.commit)
	p.vault = v.Commit("vault")
	v.Push(root, "vault")
	p.web.Require("private", privateHeader)
	p.web.Require("vault", privateHeader)
	return p
}

func TestListWithAuth(t *testing.T) {
	t.Parallel()
	p := newPrivateServer(t)
	remote := p.web.URL + "private.git"
	for _, tc := range []struct {
		name string
		auth gitremote.Auth
		ok   bool
	}{
		{"no header", gitremote.Auth{}, false},
		{"the header, scoped to the remote", gitremote.Auth{Header: privateHeader, Scope: remote}, true},
		{"the header, scoped to the server", gitremote.Auth{Header: privateHeader, Scope: p.web.URL}, true},
		{"the header, scoped elsewhere", gitremote.Auth{Header: privateHeader, Scope: p.web.URL + "other.git"}, false},
		{"another header", gitremote.Auth{Header: otherHeader, Scope: remote}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refs, err := gitremote.List(t.Context(), remote, tc.auth)
			if tc.ok {
				if err != nil || len(refs) == 0 || refs[len(refs)-1].Hash != p.commit {
					t.Fatalf("List = %v, %v; want the refs", refs, err)
				}
				return
			}
			if !errors.Is(err, failure.ErrUnauthorized) {
				t.Fatalf("List = %v, %v; want unauthorized", refs, err)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), privateHeader) || strings.Contains(err.Error(), otherHeader) {
				t.Errorf("the error shows the header: %v", err)
			}
		})
	}
}

// TestCheckoutWithAuth: fetches carry the header to the remotes in its
// scope only, submodules included, as git's http.<scope>.extraheader does.
func TestCheckoutWithAuth(t *testing.T) {
	t.Parallel()
	p := newPrivateServer(t)
	c, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// Scoped to the remote: the public submodule next to it gets nothing.
	remote := p.web.URL + "private.git"
	_, dir := checkout(t, c, gitremote.CheckoutRequest{Remote: remote, Commit: p.commit,
		Auth: gitremote.Auth{Header: privateHeader, Scope: remote}})
	want := []string{`.gitmodules 644 "[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n"`, "lib/ 755", `lib/lib.txt 644 "public lib\n"`, `secret.txt 644 "private\n"`}
	if got := gitremotetest.Tree(t, dir); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree %q, want %q", got, want)
	}
	for _, r := range p.web.Requests() {
		if r.Repo == "lib" && r.Authorization != "" {
			t.Errorf("the submodule outside the scope was sent %q", r.Authorization)
		}
		if r.Repo == "private" && r.Authorization != privateHeader {
			t.Errorf("a fetch of the remote went with %q", r.Authorization)
		}
	}

	// A private submodule outside the scope fails, unauthorized (in a new
	// cache: c has its commit already, and fetches nothing); with the
	// server as the scope (GitHub's case) it is fetched.
	vault := p.web.URL + "vault.git"
	fresh, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = fresh.Checkout(t.Context(), gitremote.CheckoutRequest{Remote: vault, Commit: p.vault, Dir: t.TempDir(),
		Auth: gitremote.Auth{Header: privateHeader, Scope: vault}})
	if !errors.Is(err, failure.ErrUnauthorized) {
		t.Fatalf("a private submodule outside the scope: %v; want unauthorized", err)
	}
	c2, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, dir = checkout(t, c2, gitremote.CheckoutRequest{Remote: vault, Commit: p.vault,
		Auth: gitremote.Auth{Header: privateHeader, Scope: p.web.URL}})
	if got := strings.Join(gitremotetest.Tree(t, dir), "\n"); !strings.Contains(got, `inner/secret.txt 644 "private\n"`) {
		t.Errorf("tree with the server as the scope:\n%s", got)
	}

	// Without a header the private remote is unauthorized.
	c3, err := gitremote.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c3.Checkout(t.Context(), gitremote.CheckoutRequest{Remote: remote, Commit: p.commit, Dir: t.TempDir()})
	if !errors.Is(err, failure.ErrUnauthorized) {
		t.Errorf("no header: %v; want unauthorized", err)
	}
}

// BenchmarkList is one ls-remote of a repository served by git
// http-backend on loopback, without and with an Authorization header: the
// price the session's secret lookups (pkg/session BenchmarkAuthorization)
// are set against.
func BenchmarkList(b *testing.B) {
	root := gitremotetest.NewRoot(b)
	root.CloneBundle(b, "public", bundle)
	root.CloneBundle(b, "private", bundle)
	web := gitremotetest.ServeHTTP(b, root)
	web.Require("private", privateHeader)
	for _, bc := range []struct {
		name, repo string
		auth       gitremote.Auth
	}{
		{"anonymous", "public", gitremote.Auth{}},
		{"with a header", "private", gitremote.Auth{Header: privateHeader, Scope: web.URL}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := gitremote.List(b.Context(), web.URL+bc.repo+".git", bc.auth); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
