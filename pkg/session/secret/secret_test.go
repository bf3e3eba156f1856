package secret_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
)

// secretFixture is a session serving secrets, a reader's connection, and a
// wiretap: a connection subscribed to every reply subject (_INBOX.>, where
// secrets travel), that records every byte it sees.
type secretFixture struct {
	id     string
	server *session.Server
	reader *nats.Conn
	client *secret.Client
	tap    *wiretap
}

type wiretap struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (w *wiretap) saw(secret string) (bool, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.buf.Bytes(), []byte(secret)), w.n
}

func serveSecrets(t *testing.T, secrets secret.Store) *secretFixture {
	t.Helper()
	env := bustest.Start(t, bus.Topology{})
	serving, _ := env.Connect(t, "client")
	reading, _ := env.Connect(t, "service")
	tapping, _ := env.Connect(t, "tap")
	f := &secretFixture{id: session.NewID(), reader: reading, tap: &wiretap{}}
	if _, err := tapping.Subscribe("_INBOX.>", func(m *nats.Msg) {
		f.tap.mu.Lock()
		defer f.tap.mu.Unlock()
		f.tap.n++
		f.tap.buf.WriteString(m.Subject)
		for k, vs := range m.Header {
			f.tap.buf.WriteString(k + strings.Join(vs, ""))
		}
		f.tap.buf.Write(m.Data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := tapping.Flush(); err != nil {
		t.Fatal(err)
	}
	var err error
	served, err := secret.NewServer(secrets)
	if err != nil {
		t.Fatal(err)
	}
	f.server, err = session.Serve(t.Context(), serving, f.id, session.Config{Protocols: []session.Protocol{served}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.server.Stop() })
	c, err := session.NewClient(reading, session.WithRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f.client = secret.NewClient(c)
	return f
}

func TestSecret(t *testing.T) {
	t.Parallel()
	const value = "ghp_0123456789abcdefSECRET"
	f := serveSecrets(t, secret.Map{"GIT_AUTH_TOKEN": []byte(value), "EMPTY": {}})

	got, err := f.client.Secret(t.Context(), f.id, "GIT_AUTH_TOKEN")
	if err != nil || string(got) != value {
		t.Fatalf("Secret = %q, %v; want the value", got, err)
	}
	if got, err := f.client.Secret(t.Context(), f.id, "EMPTY"); err != nil || len(got) != 0 {
		t.Errorf("an empty secret: %q, %v", got, err)
	}
	_, err = f.client.Secret(t.Context(), f.id, "NOPE")
	if !errors.Is(err, failure.ErrNotFound) || err.Error() != "secret NOPE: not found" {
		t.Errorf("a secret the session lacks: %v; want BuildKit's \"secret NOPE: not found\", not found", err)
	}
	var gone *session.NoSessionError
	if _, err := f.client.Secret(t.Context(), session.NewID(), "GIT_AUTH_TOKEN"); !errors.As(err, &gone) {
		t.Errorf("a session nobody serves: %v; want *NoSessionError", err)
	}

	// Every reply crossed the server; the wiretap saw them all, and the
	// value in none.
	// The tap's deliveries trail the replies, in order: once it has seen
	// three, it has seen the first, the one that carried the value.
	deadline := time.Now().Add(10 * time.Second)
	for _, n := f.tap.saw(value); n < 3; _, n = f.tap.saw(value) {
		if time.Now().After(deadline) {
			t.Fatalf("the wiretap saw %d messages in 10s, want at least 3", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if saw, n := f.tap.saw(value); saw {
		t.Errorf("the wiretap saw %d messages; the secret in the clear", n)
	}
}

// TestSecretSealedToTheRequester checks the seal: a reply opens with the
// requester's key and the session's, and with no other.
func TestSecretSealedToTheRequester(t *testing.T) {
	t.Parallel()
	f := serveSecrets(t, secret.Map{"S": []byte("value")})
	mine, _ := nkeys.CreateCurveKeys()
	other, _ := nkeys.CreateCurveKeys()
	pub, _ := mine.PublicKey()
	body, _ := json.Marshal(secret.Request{ID: "S", Key: pub})
	m, err := f.reader.Request(session.Subject(f.id, secret.OpSecret), body, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sender := m.Header.Get(session.HeaderSealedBy)
	if !nkeys.IsValidPublicCurveKey(sender) {
		t.Fatalf("reply sealed by %q: not a curve key (error %q: %s)", sender, m.Header.Get(session.HeaderError), m.Data)
	}
	if bytes.Contains(m.Data, []byte("value")) {
		t.Error("the reply holds the secret in the clear")
	}
	if v, err := mine.Open(m.Data, sender); err != nil || string(v) != "value" {
		t.Errorf("the requester opens %q, %v", v, err)
	}
	if _, err := other.Open(m.Data, sender); err == nil {
		t.Error("another key opens the reply")
	}

	for _, req := range []string{
		`{"id":"S"}`, // no key
		`{"id":"S","key":"` + strings.Replace(pub, "X", "U", 1) + `"}`, // not a curve key
		`not json`,
	} {
		m, err := f.reader.Request(session.Subject(f.id, secret.OpSecret), []byte(req), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code := m.Header.Get(session.HeaderError); code != session.CodeInvalid || bytes.Contains(m.Data, []byte("value")) {
			t.Errorf("request %s: error %q %q; want invalid, and no secret", req, code, m.Data)
		}
	}
}

func TestSecretTooLarge(t *testing.T) {
	t.Parallel()
	f := serveSecrets(t, secret.Map{"BIG": bytes.Repeat([]byte("x"), secret.MaxSize+1), "MAX": bytes.Repeat([]byte("y"), secret.MaxSize)})
	if _, err := f.client.Secret(t.Context(), f.id, "BIG"); !errors.Is(err, failure.ErrInvalid) {
		t.Errorf("a secret over MaxSecretSize: %v; want invalid", err)
	}
	if v, err := f.client.Secret(t.Context(), f.id, "MAX"); err != nil || len(v) != secret.MaxSize {
		t.Errorf("a secret of MaxSecretSize: %d bytes, %v", len(v), err)
	}
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	f := serveSecrets(t, secret.Map{
		"GIT_AUTH_TOKEN":      []byte("tok"),
		"GIT_AUTH_HEADER.h:1": []byte("Basic aGVsbG8="),
		"HTTP_AUTH_HEADER_h":  []byte("Custom x"),
		"WITH_NEWLINE":        []byte("Bearer x\n"),
		"WITH_NUL":            []byte("a\x00b"),
	})
	git := func(names ...string) []events.AuthSecret {
		var out []events.AuthSecret
		for _, n := range names {
			form := events.AuthFormGitToken
			if strings.HasPrefix(n, "GIT_AUTH_HEADER") {
				form = events.AuthFormHeader
			}
			out = append(out, events.AuthSecret{Name: n, Form: form})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		auth    events.Auth
		want    string
		wantErr string
	}{
		{name: "the first the session holds", auth: events.Auth{Session: f.id, Secrets: git("GIT_AUTH_HEADER.h:1", "GIT_AUTH_TOKEN.h:1", "GIT_AUTH_HEADER", "GIT_AUTH_TOKEN")}, want: "Basic aGVsbG8="},
		{name: "missing ones skipped", auth: events.Auth{Session: f.id, Secrets: git("GIT_AUTH_HEADER.x", "GIT_AUTH_TOKEN.x", "GIT_AUTH_HEADER", "GIT_AUTH_TOKEN")}, want: "basic eC1hY2Nlc3MtdG9rZW46dG9r"},
		{name: "none held", auth: events.Auth{Session: f.id, Secrets: git("A", "B")}},
		{name: "a bearer token", auth: events.Auth{Session: f.id, Secrets: []events.AuthSecret{
			{Name: "HTTP_AUTH_TOKEN_h", Form: events.AuthFormBearer}, {Name: "HTTP_AUTH_HEADER_h", Form: events.AuthFormHeader},
		}}, want: "Custom x"},
		{name: "a gone session: no header", auth: events.Auth{Session: session.NewID(), Secrets: git("GIT_AUTH_TOKEN")}},
		{name: "no session: no header", auth: events.Auth{Secrets: git("GIT_AUTH_TOKEN")}},
		{name: "required and held", auth: events.Auth{Session: f.id, Secrets: []events.AuthSecret{{Name: "HTTP_AUTH_HEADER_h", Form: events.AuthFormHeader, Required: true}}}, want: "Custom x"},
		{
			name:    "required and missing",
			auth:    events.Auth{Session: f.id, Secrets: []events.AuthSecret{{Name: "MINE", Form: events.AuthFormHeader, Required: true}}},
			wantErr: "failed to retrieve HTTP auth secret MINE: secret MINE: not found",
		},
		{
			name:    "required without a session",
			auth:    events.Auth{Secrets: []events.AuthSecret{{Name: "MINE", Form: events.AuthFormHeader, Required: true}}},
			wantErr: "failed to retrieve HTTP auth secret MINE: no active sessions",
		},
		{
			name:    "required of a gone session",
			auth:    events.Auth{Session: "gone", Secrets: []events.AuthSecret{{Name: "MINE", Form: events.AuthFormHeader, Required: true}}},
			wantErr: "failed to retrieve HTTP auth secret MINE: no active session for gone",
		},
		{
			name:    "a line break",
			auth:    events.Auth{Session: f.id, Secrets: []events.AuthSecret{{Name: "WITH_NEWLINE", Form: events.AuthFormHeader}}},
			wantErr: "secret WITH_NEWLINE: not a valid Authorization header: it holds a line break at its end (a file written with echo?)",
		},
		{
			name:    "a control character",
			auth:    events.Auth{Session: f.id, Secrets: []events.AuthSecret{{Name: "WITH_NUL", Form: events.AuthFormBearer}}},
			wantErr: "secret WITH_NUL: not a valid Authorization header: it holds a control character",
		},
		{
			name:    "an unknown form",
			auth:    events.Auth{Session: f.id, Secrets: []events.AuthSecret{{Name: "GIT_AUTH_TOKEN", Form: "plain"}}},
			wantErr: `secret GIT_AUTH_TOKEN: unknown form "plain"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := f.client.Authorization(t.Context(), tc.auth)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, failure.ErrInvalid) && !errors.Is(err, failure.ErrNotFound) {
					t.Fatalf("Authorization = %q, %v; want the permanent error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Authorization = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// BenchmarkAuthorization is what reading a source's credentials costs:
// one sealed secret, and a git source's four names of which only the last
// is held (the default names of a build with GIT_AUTH_TOKEN), on an
// embedded NATS server.
func BenchmarkAuthorization(b *testing.B) {
	env := bustest.Start(b, bus.Topology{})
	serving, _ := env.Connect(b, "client")
	reading, _ := env.Connect(b, "service")
	id := session.NewID()
	served, err := secret.NewServer(secret.Map{"GIT_AUTH_TOKEN": []byte("ghp_0123456789abcdef0123456789abcdef0123")})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := session.Serve(b.Context(), serving, id, session.Config{Protocols: []session.Protocol{served}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Stop() })
	sc, err := session.NewClient(reading)
	if err != nil {
		b.Fatal(err)
	}
	c := secret.NewClient(sc)
	b.Run("one secret", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Secret(b.Context(), id, "GIT_AUTH_TOKEN"); err != nil {
				b.Fatal(err)
			}
		}
	})
	git := events.Auth{Session: id, Secrets: []events.AuthSecret{
		{Name: "GIT_AUTH_HEADER.example.com", Form: events.AuthFormHeader}, {Name: "GIT_AUTH_TOKEN.example.com", Form: events.AuthFormGitToken},
		{Name: "GIT_AUTH_HEADER", Form: events.AuthFormHeader}, {Name: "GIT_AUTH_TOKEN", Form: events.AuthFormGitToken},
	}}
	b.Run("git, four names", func(b *testing.B) {
		for b.Loop() {
			if h, err := c.Authorization(b.Context(), git); err != nil || h == "" {
				b.Fatal(h, err)
			}
		}
	})
}
