package fleettest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/output"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// ServeSession serves cfg in a new client session on a connection of its
// own until the end of the test, and returns the session's id.
func (s *Stack) ServeSession(t testing.TB, cfg session.Config) string {
	t.Helper()
	nc, _ := s.Env.Connect(t, "client")
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id := key.ID
	cfg.Key = key
	srv, err := session.Serve(t.Context(), nc, id, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return id
}

// HoldKey makes a session key that this process holds until the end of
// the test (session.Hold): requests Submit sends naming it are signed,
// whether or not anything serves the session.
func HoldKey(t testing.TB) session.Key {
	t.Helper()
	k, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(session.Hold(k))
	return k
}

// ServeSecrets serves secrets in a new client session (ServeSession):
// what a build names as its Session.
func (s *Stack) ServeSecrets(t testing.TB, secrets secret.Map) string {
	t.Helper()
	return s.ServeSession(t, session.Config{Protocols: []session.Protocol{Secrets(t, secrets)}})
}

// Secrets serves the secrets of store, for a session.Config's Protocols.
func Secrets(t testing.TB, store secret.Store) *secret.Server {
	t.Helper()
	p, err := secret.NewServer(store)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Dirs serves the local directories dirs, by name, for a session.Config's
// Protocols.
func Dirs(t testing.TB, dirs map[string]string) *dirsync.Server {
	t.Helper()
	p, err := dirsync.NewServer(dirs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StoredWith returns where needle appears in what JetStream holds: every
// message of every stream (the events, the dead letters, each KV bucket),
// subject, headers and body, as "<stream> <subject>". A secret must
// appear nowhere.
func (s *Stack) StoredWith(t testing.TB, needle string) []string {
	t.Helper()
	ctx := t.Context()
	var found []string
	names := s.Env.JS.StreamNames(ctx)
	for name := range names.Name() {
		stream, err := s.Env.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			continue
		}
		c, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for read := uint64(0); read < info.State.Msgs; {
			batch, err := c.Fetch(int(min(info.State.Msgs-read, 256)), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for m := range batch.Messages() {
				n++
				var all bytes.Buffer
				all.WriteString(m.Subject())
				for k, vs := range m.Headers() {
					all.WriteString(k)
					for _, v := range vs {
						all.WriteString(v)
					}
				}
				all.Write(m.Data())
				if bytes.Contains(all.Bytes(), []byte(needle)) {
					found = append(found, name+" "+m.Subject())
				}
			}
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
				t.Fatal(err)
			}
			if n == 0 {
				t.Fatalf("stream %s: read %d of %d messages, then nothing", name, read, info.State.Msgs)
			}
			read += uint64(n)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// Outputs lets the fleet write into outputs, by store id, for a
// session.Config's Protocols.
func Outputs(t testing.TB, outputs map[string]*ocilayout.Layout) *output.Server {
	t.Helper()
	p, err := output.NewServer(outputs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Stores serves the OCI layouts stores, by store id, for a
// session.Config's Protocols.
func Stores(t testing.TB, stores map[string]*ocilayout.Layout) *store.Server {
	t.Helper()
	p, err := store.NewServer(stores)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
