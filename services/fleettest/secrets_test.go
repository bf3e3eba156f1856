package fleettest_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/puller"
)

// Credentials from the client: git and http sources read their secrets
// from the build's session (BuildKit's git.authtokensecret,
// git.authheadersecret, http.authheadersecret and per-host secrets),
// the puller to compute the key and the snapshotter to fetch, and no
// secret reaches an event or a bucket.

const (
	gitToken = "ghp_fleetTOKEN0123456789"
	// gitTokenHeader is BuildKit's header for gitToken:
	// printf 'x-access-token:ghp_fleetTOKEN0123456789' | base64.
	gitTokenHeader = "basic eC1hY2Nlc3MtdG9rZW46Z2hwX2ZsZWV0VE9LRU4wMTIzNDU2Nzg5"
)

// privateGit serves the BuildKit fixture repository as private.git over
// http, answering 401 to any request without gitTokenHeader.
func privateGit(t *testing.T) *gitremotetest.HTTP {
	t.Helper()
	root := gitremotetest.NewRoot(t)
	root.CloneBundle(t, "private", filepath.Join(fleettest.ImagesDir, "..", "sources", "git", "repo.bundle"))
	web := gitremotetest.ServeHTTP(t, root)
	web.Require("private", gitTokenHeader)
	return web
}

// gitOp is what LLB (and Stevedore's CLI) make of the private remote at
// ref: the URL in git.fullurl, the default secret names.
func gitOp(web *gitremotetest.HTTP, ref string) events.SourceOp {
	_, hostPath, _ := strings.Cut(web.URL, "://")
	return events.SourceOp{Identifier: "git://" + hostPath + "private.git#" + ref, Attrs: map[string]string{
		source.AttrFullRemoteURL:    web.URL + "private.git",
		source.AttrAuthTokenSecret:  source.DefaultGitAuthTokenSecret,
		source.AttrAuthHeaderSecret: source.DefaultGitAuthHeaderSecret,
	}}
}

func TestGitCredentialsFromTheSession(t *testing.T) {
	t.Parallel()
	web := privateGit(t)
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	fx := loadGitFixture(t)

	// GIT_AUTH_TOKEN: the key is BuildKit's, the checkout the tree of v2,
	// and every request the fleet made carried the token.
	sess := s.ServeSecrets(t, secret.Map{"GIT_AUTH_TOKEN": []byte(gitToken)})
	rec, _ := s.Submit(t, events.SourceResolveRequested{Source: gitOp(web, "v2"), Snapshot: true, Session: sess})
	ready := fleettest.Ready(t, rec)
	if ready.Keys[0].Key != fx.key("v2") {
		t.Errorf("key %s, want BuildKit's %s", ready.Keys[0].Key, fx.key("v2"))
	}
	checkTree(t, svc.Store(), ready.SnapshotKey, map[string]fleettest.File{
		"README":       {Content: "hello\nsecond\n", Mode: 0o644},
		"sub":          {Dir: true, Mode: 0o755},
		"sub/file.txt": {Content: "in sub\n", Mode: 0o644},
	})
	reqs := web.Requests()
	if len(reqs) < 2 {
		t.Fatalf("%d requests: want a listing and a fetch", len(reqs))
	}
	for _, r := range reqs {
		if r.Authorization != gitTokenHeader {
			t.Errorf("a request to %s went with %q", r.Repo, r.Authorization)
		}
	}
	req := rec.OfType(events.TypeSnapshotRequested)[0].Data.(events.SnapshotRequested)
	if a := req.Content.Git.Auth; a == nil || a.Session != sess || a.Scope != web.URL+"private.git" || len(a.Secrets) != 4 {
		t.Errorf("the snapshot request names %+v", req.Content.Git.Auth)
	}

	// A host-specific header secret, in another session, for another ref.
	host := strings.TrimSuffix(strings.TrimPrefix(web.URL, "http://"), "/")
	other := s.ServeSecrets(t, secret.Map{"GIT_AUTH_HEADER." + host: []byte(gitTokenHeader)})
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: gitOp(web, "v1"), Snapshot: true, Session: other})
	if ready := fleettest.Ready(t, rec); ready.Keys[0].Key != fx.key("v1") {
		t.Errorf("v1 with a host secret: key %s, want %s", ready.Keys[0].Key, fx.key("v1"))
	}

	// No session, or one without the secrets: the remote refuses, and
	// the build fails at once as unauthorized.
	empty := s.ServeSecrets(t, secret.Map{"UNRELATED": []byte("x")})
	for _, sess := range []string{"", empty} {
		rec, _ := s.Submit(t, events.SourceResolveRequested{Source: gitOp(web, "main"), Snapshot: true, Session: sess})
		if f := fleettest.Failure(t, rec); f.Code != "unauthorized" || f.Attempts != 1 {
			t.Errorf("session %q: %+v; want unauthorized on the first attempt", sess, f)
		}
	}

	for _, secret := range []string{gitToken, gitTokenHeader} {
		if where := s.StoredWith(t, secret); len(where) > 0 {
			t.Errorf("%q is stored in %v", secret, where)
		}
	}
	s.ConsumerIdle(t, events.ConsumerPuller)
	s.ConsumerIdle(t, events.ConsumerSnapshotter)
}

// A listing made with credentials answers only its own request: a build
// without them, waiting for the same listing at the same time, lists for
// itself and is refused.
func TestGitListingWithCredentialsIsNotShared(t *testing.T) {
	t.Parallel()
	web := privateGit(t)
	s := fleettest.New(t)
	sess := s.ServeSecrets(t, secret.Map{"GIT_AUTH_TOKEN": []byte(gitToken)})
	with, _ := s.Submit(t, events.SourceResolveRequested{Source: gitOp(web, "main"), Session: sess})
	with.Wait(t, 10*time.Second, events.TypeCacheKeyRequested)
	without, _ := s.Submit(t, events.SourceResolveRequested{Source: gitOp(web, "main")})
	without.Wait(t, 10*time.Second, events.TypeCacheKeyRequested)
	// One at a time, in order: the listing with credentials is done and
	// stored before the other request, made before it, is handled.
	s.Puller(t, func(c *puller.Config) { c.Concurrency = 1 })
	fleettest.Miss(t, with)
	if f := fleettest.Failure(t, without); f.Code != "unauthorized" {
		t.Errorf("the build without credentials: %+v; want unauthorized", f)
	}
}

// privateFile is an http server of one file that wants an Authorization
// header, sends an ETag, and counts what it is asked.
type privateFile struct {
	*httptest.Server
	want    string
	content []byte

	mu   sync.Mutex
	gets int
	// heads and conditional count HEADs and requests with If-None-Match.
	heads, conditional int
	// auth are the Authorization headers of the requests, in order.
	auth []string
}

func newPrivateFile(t *testing.T, want string, content []byte) *privateFile {
	t.Helper()
	p := &privateFile{want: want, content: content}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.auth = append(p.auth, r.Header.Get("Authorization"))
		switch r.Method {
		case http.MethodGet:
			p.gets++
		case http.MethodHead:
			p.heads++
		}
		if r.Header.Get("If-None-Match") != "" {
			p.conditional++
		}
		p.mu.Unlock()
		if r.Header.Get("Authorization") != want {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "private.txt", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *privateFile) counts() (gets, heads, conditional int, auth []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gets, p.heads, p.conditional, append([]string(nil), p.auth...)
}

func TestHTTPCredentialsFromTheSession(t *testing.T) {
	t.Parallel()
	const token = "tok-0123456789abcdef"
	content := []byte("only for those who know\n")
	srv := newPrivateFile(t, "Bearer "+token, content)
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	url := srv.URL + "/private.txt"
	op := events.SourceOp{Identifier: url}

	// The per-host token: the puller hashes, the snapshotter downloads,
	// both with "Bearer <token>".
	sess := s.ServeSecrets(t, secret.Map{source.HTTPAuthTokenSecretPrefix + "127.0.0.1": []byte(token)})
	rec, _ := s.Submit(t, events.SourceResolveRequested{Source: op, Snapshot: true, Session: sess})
	ready := fleettest.Ready(t, rec)
	checkTree(t, svc.Store(), ready.SnapshotKey, map[string]fleettest.File{"private.txt": {Content: string(content), Mode: 0o600, ModTime: time.Unix(0, 0)}})
	gets, _, _, auth := srv.counts()
	if gets != 2 {
		t.Errorf("%d GETs, want 2 (the puller's hash, the snapshotter's download)", gets)
	}
	for _, a := range auth {
		if a != "Bearer "+token {
			t.Errorf("a request went with %q", a)
		}
	}

	// What the build learnt with them explains its own miss only: the
	// fleet keeps no sighting of the URL (pkg/lineage).
	if m := rec.OfType(events.TypeCacheMiss); len(m) != 1 || m[0].Data.(events.CacheMiss).Explanation == nil {
		t.Errorf("the authenticated miss: %v, want one cache.miss with an explanation", bustest.Summary(m))
	}
	manifests, err := s.Env.JS.KeyValue(t.Context(), events.BucketManifests)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := manifests.Get(t.Context(), lineage.Key(url)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the fleet kept a sighting learnt with credentials (%v)", err)
	}

	// Without credentials, at the same URL, after them: the state the
	// authenticated revalidation stored does not answer it.
	if f := fleettest.Failure(t, s.Resolve(t, url, nil, "")); f.Reason != "invalid response status 401" || f.Code != "unauthorized" {
		t.Errorf("without credentials: %+v", f)
	}

	// Another session with the token revalidates with the ETag the fleet
	// keeps: a conditional HEAD, no download, and a hit.
	again := s.ServeSecrets(t, secret.Map{source.HTTPAuthTokenSecretPrefix + "127.0.0.1": []byte(token)})
	gets0, heads0, conditional0, _ := srv.counts()
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: op, Session: again})
	end := fleettest.Final(t, rec)
	gets, heads, conditional, _ := srv.counts()
	if hit, ok := end.Data.(events.CacheHit); !ok || hit.Key != ready.Keys[0] || gets != gets0 || heads != heads0+1 || conditional != conditional0+1 {
		t.Errorf("revalidation in a new session: %v (want a hit of %+v), %d GETs, %d HEADs, %d conditional; want one conditional HEAD",
			bustest.Summary([]events.Event{end}), ready.Keys[0], gets-gets0, heads-heads0, conditional-conditional0)
	}

	// http.authheadersecret names the one secret to send, which the
	// session must have: BuildKit's text, before any request.
	named := events.SourceOp{Identifier: url, Attrs: map[string]string{source.AttrHTTPAuthHeaderSecret: "MY_AUTH"}}
	_, _, _, auth = srv.counts()
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: named, Snapshot: true, Session: sess})
	if f := fleettest.Failure(t, rec); f.Reason != "failed to retrieve HTTP auth secret MY_AUTH: secret MY_AUTH: not found" || f.Code != "not-found" {
		t.Errorf("a named secret the session lacks: %+v", f)
	}
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: named, Snapshot: true})
	if f := fleettest.Failure(t, rec); f.Reason != "failed to retrieve HTTP auth secret MY_AUTH: no active sessions" {
		t.Errorf("a named secret without a session: %+v", f)
	}
	if _, _, _, after := srv.counts(); len(after) != len(auth) {
		t.Errorf("%d requests reached the server for a secret that could not be read", len(after)-len(auth))
	}
	withHeader := s.ServeSecrets(t, secret.Map{"MY_AUTH": []byte("Bearer " + token)})
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: named, Snapshot: true, Session: withHeader})
	if r := fleettest.Ready(t, rec); r.Keys[0].Key == ready.Keys[0].Key {
		t.Error("the key with http.authheadersecret is the key without: BuildKit's key names the secret")
	}

	if where := s.StoredWith(t, token); len(where) > 0 {
		t.Errorf("the token is stored in %v", where)
	}
	s.ConsumerIdle(t, events.ConsumerPuller)
	s.ConsumerIdle(t, events.ConsumerSnapshotter)
}

// A revalidation made with credentials answers only its own request: a
// build without them, made before it and handled after it, asks the URL
// itself and is refused.
func TestHTTPRevalidationWithCredentialsIsNotShared(t *testing.T) {
	t.Parallel()
	const token = "tok-shared-not"
	srv := newPrivateFile(t, "Bearer "+token, []byte("private\n"))
	s := fleettest.New(t)
	sess := s.ServeSecrets(t, secret.Map{source.HTTPAuthTokenSecretPrefix + "127.0.0.1": []byte(token)})
	op := events.SourceOp{Identifier: srv.URL + "/private.txt"}
	with, _ := s.Submit(t, events.SourceResolveRequested{Source: op, Session: sess})
	with.Wait(t, 10*time.Second, events.TypeCacheKeyRequested)
	without, _ := s.Submit(t, events.SourceResolveRequested{Source: op})
	without.Wait(t, 10*time.Second, events.TypeCacheKeyRequested)
	s.Puller(t, func(c *puller.Config) { c.Concurrency = 1 })
	fleettest.Miss(t, with)
	if f := fleettest.Failure(t, without); f.Reason != "invalid response status 401" {
		t.Errorf("the build without credentials: %+v; want a 401", f)
	}
}

// A client that goes away after its keys and before its snapshot takes
// its secrets with it: the snapshotter's download goes without them, as
// BuildKit's would, and the server's 401 ends the build at once,
// unauthorized.
func TestHTTPSecretsGoWithTheSession(t *testing.T) {
	t.Parallel()
	const token = "tok-gone"
	srv := newPrivateFile(t, "Bearer "+token, []byte("private\n"))
	s := fleettest.New(t)
	s.Puller(t)
	nc, _ := s.Env.Connect(t, "client")
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := session.Serve(t.Context(), nc, key.ID, session.Config{Key: key,
		Protocols: []session.Protocol{fleettest.Secrets(t, secret.Map{source.HTTPAuthTokenSecretPrefix + "127.0.0.1": []byte(token)})}})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := s.Submit(t, events.SourceResolveRequested{Source: events.SourceOp{Identifier: srv.URL + "/private.txt"}, Snapshot: true, Session: sess.ID()})
	rec.Wait(t, 20*time.Second, events.TypeSnapshotRequested)
	if err := sess.Stop(); err != nil {
		t.Fatal(err)
	}
	s.Snapshotter(t)
	end := fleettest.PullEnd(t, rec)
	f, ok := end.Data.(events.SnapshotFailed)
	if !ok || f.Reason != "invalid response status 401" || f.Code != "unauthorized" || f.Attempts != 1 {
		t.Errorf("the pull ended with %v %+v; want a 401, unauthorized, at the first attempt", bustest.Summary([]events.Event{end}), end.Data)
	}
	_, _, _, auth := srv.counts()
	if last := auth[len(auth)-1]; last != "" {
		t.Errorf("the snapshotter's download went with %q", last)
	}
}
