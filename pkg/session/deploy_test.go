package session_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// TestDeployPermissions runs a NATS server with deploy/nats.conf's users
// and checks what they may do with sessions: the client user serves one,
// the puller and snapshotter users read from it, and the watcher user can
// neither read one nor serve one. Not parallel: it sets the environment
// the file reads its passwords from.
func TestDeployPermissions(t *testing.T) {
	users := []string{"admin", "resolver", "puller", "snapshotter", "exporter", "client", "watcher"}
	for _, u := range users {
		t.Setenv("STEVEDORE_"+map[string]string{"admin": "ADMIN", "resolver": "RESOLVER", "puller": "PULLER",
			"snapshotter": "SNAPSHOTTER", "exporter": "EXPORTER", "client": "CLIENT", "watcher": "WATCHER"}[u]+"_PASSWORD", u+"-pw")
	}
	t.Setenv("STEVEDORE_NATS_NO_AUTH_USER", "client")
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "deploy", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.HTTPPort, opts.StoreDir = "127.0.0.1", server.RANDOM_PORT, 0, t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	connect := func(user string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, user+"-pw"), nats.CustomInboxPrefix(bus.InboxPrefix(user)), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	l, err := ocilayout.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a layer of a client's layout")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if _, err := l.WriteBlobBytes(t.Context(), desc, data); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	stores := session.Config{Protocols: []session.Protocol{storeProtocol(t, map[string]*ocilayout.Layout{"app": l}),
		dirProtocol(t, map[string]string{"context": dir}), secretProtocol(t, secret.Map{"GIT_AUTH_TOKEN": []byte("the token")})}}
	if _, err := session.Serve(t.Context(), connect("client"), "s1", stores); err != nil {
		t.Fatalf("the client user cannot serve: %v", err)
	}
	for _, user := range []string{"puller", "snapshotter", "exporter"} {
		c, err := session.NewClient(connect(user), session.WithRequestTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := store.NewClient(c).ReadBlob(t.Context(), "s1", "app", desc, 1<<20); err != nil || string(got) != string(data) {
			t.Errorf("%s reads %q, %v; want the blob", user, got, err)
		}
		// Only the snapshotter transfers local directories.
		entries, err := dirsync.NewClient(c).List(t.Context(), "s1", "context", dirsync.Filter{})
		if user == "snapshotter" && (err != nil || len(entries) != 1) {
			t.Errorf("the snapshotter lists %v, %v; want the one file", entries, err)
		}
		if user != "snapshotter" && err == nil {
			t.Errorf("the %s user listed a local directory", user)
		}
		// The puller (ls-remote, http revalidation) and the snapshotter
		// (fetch, download) read secrets; the exporter never does.
		got, err := secret.NewClient(c).Secret(t.Context(), "s1", "GIT_AUTH_TOKEN")
		if user != "exporter" && (err != nil || string(got) != "the token") {
			t.Errorf("the %s user reads the secret as %q, %v", user, got, err)
		}
		if user == "exporter" && err == nil {
			t.Error("the exporter user read a secret")
		}
	}
	// Nor may a client read another client's secrets (or its own through
	// the fleet's subjects).
	other, err := session.NewClient(connect("client"), session.WithRequestTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secret.NewClient(other).Secret(t.Context(), "s1", "GIT_AUTH_TOKEN"); err == nil {
		t.Error("the client user read a session's secret")
	}

	// The watcher's requests never reach the session.
	w, err := session.NewClient(connect("watcher"), session.WithRequestTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewClient(w).Stat(t.Context(), "s1", "app", desc.Digest); err == nil {
		t.Error("the watcher user read a session")
	}
	if _, err := secret.NewClient(w).Secret(t.Context(), "s1", "GIT_AUTH_TOKEN"); err == nil {
		t.Error("the watcher user read a session's secret")
	}
	// Nor does it get the requests of a session it tries to serve.
	if srv, err := session.Serve(t.Context(), connect("watcher"), "s2", stores); err == nil {
		defer func() { _ = srv.Stop() }()
	}
	p, err := session.NewClient(connect("puller"), session.WithRequestTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewClient(p).Stat(t.Context(), "s2", "app", desc.Digest); !errors.Is(err, session.ErrNoSession) {
		t.Errorf("a session served by the watcher user answered: %v", err)
	}
}
