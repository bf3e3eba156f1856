package session_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/rootfs"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// startDeployServer runs a NATS server with deploy/nats.conf (every user's
// password is "<user>-pw") and returns a function that connects as a user
// the way Stevedore's programs do (bus.ConnectOnce, credentials in the
// URL). It sets the environment, so its callers are not parallel.
func startDeployServer(t *testing.T) func(user string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	for _, u := range []string{"admin", "resolver", "puller", "snapshotter", "exporter", "client", "watcher"} {
		t.Setenv("STEVEDORE_"+strings.ToUpper(u)+"_PASSWORD", u+"-pw")
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
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	return func(user string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		opts = append([]nats.Option{nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, opts...)
		nc, js, err := bus.ConnectOnce(fmt.Sprintf("nats://%s:%s-pw@%s", user, user, addr), "test-"+user, 5*time.Second, opts...)
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, js
	}
}

// tap subscribes nc to subjects and records what arrives.
type tap struct {
	nc      *nats.Conn
	subs    []*nats.Subscription
	mu      sync.Mutex
	msgs    []*nats.Msg
	handled atomic.Int64
}

func tapOn(t *testing.T, nc *nats.Conn, subjects ...string) *tap {
	t.Helper()
	tp := &tap{nc: nc}
	for _, s := range subjects {
		sub, err := nc.Subscribe(s, func(m *nats.Msg) {
			tp.mu.Lock()
			tp.msgs = append(tp.msgs, m)
			tp.mu.Unlock()
			tp.handled.Add(1)
		})
		if err != nil {
			t.Fatal(err)
		}
		tp.subs = append(tp.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return tp
}

// settle returns once the tap has recorded everything the server sent
// it before now: a round trip, then every message it queued handled.
func (tp *tap) settle(t *testing.T) {
	t.Helper()
	if err := tp.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var delivered int64
		pending := 0
		for _, sub := range tp.subs {
			n, err := sub.Delivered()
			if err != nil {
				t.Fatal(err)
			}
			p, _, err := sub.Pending()
			if err != nil {
				t.Fatal(err)
			}
			delivered, pending = delivered+n, pending+p
		}
		if pending == 0 && delivered == tp.handled.Load() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tap still has %d messages to handle", pending)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tp *tap) all() []*nats.Msg {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]*nats.Msg(nil), tp.msgs...)
}

// Finding 3: replies others can read. Under deploy/nats.conf, a client
// and a watcher subscribe to every inbox they can name while a service
// reads a layer from another client's session and pulls a delivery from
// its durable consumer: neither sees the layer's bytes nor the delivery,
// and a +TERM the client sends to the delivery's ack subject (as if it
// had seen it) does not end the service's delivery.
func TestSecurityDeployReplies(t *testing.T) {
	connect := startDeployServer(t)
	// The spies, subscribed to every inbox there is to name.
	inboxes := []string{"_INBOX.>", "_INBOX_resolver.>", "_INBOX_puller.>", "_INBOX_snapshotter.>", "_INBOX_exporter.>", "_INBOX_client.>", "_INBOX_watcher.>"}
	spyErrs := make(chan error, 16)
	spyNC, _ := connect("client", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case spyErrs <- err:
		default:
		}
	}))
	spy := tapOn(t, spyNC, inboxes...)
	watchNC, _ := connect("watcher")
	watchSpy := tapOn(t, watchNC, inboxes...)

	// A client serves a layout; the snapshotter reads a blob of it.
	l, err := ocilayout.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("the private layer of another client's layout")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if _, err := l.WriteBlobBytes(t.Context(), desc, data); err != nil {
		t.Fatal(err)
	}
	ownerNC, ownerJS := connect("client")
	if _, err := session.Serve(t.Context(), ownerNC, "victim", session.Config{Protocols: []session.Protocol{storeProtocol(t, map[string]*ocilayout.Layout{"app": l})}}); err != nil {
		t.Fatal(err)
	}
	snapNC, _ := connect("snapshotter")
	c, err := session.NewClient(snapNC, session.WithRequestTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := store.NewClient(c).ReadBlob(t.Context(), "victim", "app", desc, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the snapshotter reads %q, %v", got, err)
	}

	// The fleet's topology, and a build request for the resolver.
	_, adminJS := connect("admin")
	if err := bus.Provision(t.Context(), adminJS, bus.Topology{Consumers: []bus.Consumer{bus.ResolverConsumer()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Submit(t.Context(), ownerJS, "victim-build", events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://example.com/a:1"}}); err != nil {
		t.Fatal(err)
	}
	_, resolverJS := connect("resolver")
	cons, err := resolverJS.Consumer(t.Context(), events.StreamEvents, events.ConsumerResolver)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var delivery jetstream.Msg
	for m := range batch.Messages() {
		delivery = m
	}
	if delivery == nil {
		t.Fatal("the resolver got no delivery")
	}
	// Whatever the server sent the spies with the delivery, they have.
	spy.settle(t)
	watchSpy.settle(t)

	for who, tp := range map[string]*tap{"client": spy, "watcher": watchSpy} {
		for _, m := range tp.all() {
			if bytes.Contains(m.Data, data) {
				t.Errorf("the %s user read the session's layer on %s", who, m.Subject)
			}
			if strings.HasPrefix(m.Reply, "$JS.ACK.") {
				t.Errorf("the %s user received the resolver's delivery (ack subject %s)", who, m.Reply)
				if who == "client" {
					_ = m.Respond([]byte("+TERM"))
				}
			}
		}
	}
	// As if the client had learnt the ack subject anyway.
	_ = spyNC.Publish(delivery.Reply(), []byte("+TERM"))
	_ = spyNC.Flush()
	// The premise of the check: the server has read the +TERM, and said
	// it refused it.
	for refused := false; !refused; {
		select {
		case err := <-spyErrs:
			refused = errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), delivery.Reply())
		case <-time.After(10 * time.Second):
			t.Fatal("the server never refused the client's +TERM")
		}
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 1 {
		t.Errorf("the resolver's delivery is no longer pending (%d pending): a client terminated it", info.NumAckPending)
	}
	if err := delivery.DoubleAck(t.Context()); err != nil {
		t.Errorf("the resolver cannot ack its own delivery: %v", err)
	}
}

// Finding 3, session answers: a client (the same NATS user as every
// client) subscribes to another client's session subjects and answers the
// fleet's requests with content of its own. A reader accepts answers only
// from the session it asked: forged answers are ignored, whether or not
// the real session is there.
func TestSecuritySessionAnswersAuthenticated(t *testing.T) {
	connect := startDeployServer(t)
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id := key.ID
	forgedEntry := dirsync.Entry{Path: "injected", Mode: 0o644, Size: 5}
	attackerNC, _ := connect("client")
	if _, err := attackerNC.Subscribe(session.Filter(id), func(m *nats.Msg) {
		reply := nats.NewMsg(m.Reply)
		switch m.Subject[strings.LastIndexByte(m.Subject, '.')+1:] {
		case dirsync.OpList:
			reply.Data, _ = json.Marshal(dirsync.ListReply{Entries: []dirsync.Entry{forgedEntry}})
		default:
			reply.Header.Set(session.HeaderSize, "5")
			reply.Data = []byte("evil!")
		}
		_ = attackerNC.PublishMsg(reply)
	}); err != nil {
		t.Fatal(err)
	}
	_ = attackerNC.Flush()

	snapNC, _ := connect("snapshotter")
	c, err := session.NewClient(snapNC, session.WithRequestTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// The session is not there: only the attacker answers.
	if entries, err := dirsync.NewClient(c).List(t.Context(), id, "context", dirsync.Filter{}); err == nil {
		t.Errorf("a reader accepted a listing no session signed: %+v", entries)
	}
	evil := []byte("evil!")
	if got, err := store.NewClient(c).ReadBlob(t.Context(), id, "app", ocispec.Descriptor{Digest: digest.FromBytes(evil), Size: 5}, 1<<20); err == nil {
		t.Errorf("a reader accepted a blob no session signed: %q", got)
	}

	// The session serves; the attacker still answers too.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "real"), []byte("real"), 0o644); err != nil {
		t.Fatal(err)
	}
	ownerNC, _ := connect("client")
	if _, err := session.Serve(t.Context(), ownerNC, id, session.Config{Key: key, Protocols: []session.Protocol{dirProtocol(t, map[string]string{"context": dir})}}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		entries, err := dirsync.NewClient(c).List(t.Context(), id, "context", dirsync.Filter{})
		if err != nil || len(entries) != 1 || entries[0].Path != "real" {
			t.Fatalf("the reader lists %+v, %v; want the session's one file", entries, err)
		}
	}
	// A session that does not hold the key of its id cannot serve it.
	other, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := session.Serve(t.Context(), ownerNC, id, session.Config{Key: other}); err == nil {
		t.Error("a session served an id whose key it does not hold")
	}
}

// Finding 6, the request itself: under deploy/nats.conf the resolver may
// delete a message from the events stream (a request it refused for the
// credentials in it, bus.Erase), and a client may not delete anything.
func TestSecurityDeployResolverErases(t *testing.T) {
	connect := startDeployServer(t)
	_, adminJS := connect("admin")
	if err := bus.Provision(t.Context(), adminJS, bus.Topology{Consumers: []bus.Consumer{bus.ResolverConsumer()}}); err != nil {
		t.Fatal(err)
	}
	_, clientJS := connect("client")
	publish := func(build string) uint64 {
		t.Helper()
		e := events.New(events.SourceResolveRequested{Source: events.SourceOp{Identifier: "https://user:pw@example.com/f"}})
		e.ID, e.BuildID, e.Source, e.Time = build+"-request", build, "/test", time.Now()
		m, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := clientJS.PublishMsg(t.Context(), &nats.Msg{Subject: m.Subject, Header: nats.Header(m.Header), Data: m.Data})
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	for user, may := range map[string]bool{"client": false, "resolver": true} {
		seq := publish("erase-by-" + user)
		_, js := connect(user)
		ctx, cancel := context.WithTimeoutCause(t.Context(), 2*time.Second, errors.New("no answer to the delete in 2 s"))
		stream, err := js.Stream(ctx, events.StreamEvents)
		if err == nil {
			err = stream.SecureDeleteMsg(ctx, seq)
		}
		cancel()
		if may && err != nil {
			t.Errorf("the %s user cannot erase a request: %v", user, err)
		}
		if !may && err == nil {
			t.Errorf("the %s user erased message %d of the events stream", user, seq)
		}
		all, err := adminJS.Stream(t.Context(), events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := all.GetMsg(t.Context(), seq); may == (err == nil) {
			t.Errorf("after the %s user's delete, reading message %d: %v", user, seq, err)
		}
	}
}

// Finding 2, the fallback chain: under deploy/nats.conf a service
// provisions the fleet key and every service reads it, while a client or
// a watcher cannot, so neither can compute the fallback ids of the
// services' events (bus.ReissueID).
func TestSecurityDeployFleetKey(t *testing.T) {
	connect := startDeployServer(t)
	_, resolverJS := connect("resolver")
	if err := bus.Provision(t.Context(), resolverJS, bus.Topology{Consumers: []bus.Consumer{bus.ResolverConsumer()}}); err != nil {
		t.Fatalf("the resolver user cannot provision: %v", err)
	}
	want, err := bus.FleetKey(t.Context(), resolverJS)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"puller", "snapshotter", "exporter"} {
		_, js := connect(user)
		if err := bus.Provision(t.Context(), js, bus.Topology{}); err != nil {
			t.Errorf("the %s user cannot provision: %v", user, err)
		}
		if got, err := bus.FleetKey(t.Context(), js); err != nil || !bytes.Equal(got, want) {
			t.Errorf("the %s user reads the fleet key as %x, %v; want the one the resolver made", user, got, err)
		}
	}
	for _, user := range []string{"client", "watcher"} {
		_, js := connect(user)
		ctx, cancel := context.WithTimeoutCause(t.Context(), 2*time.Second, errors.New("no fleet key in 2 s"))
		got, err := bus.FleetKey(ctx, js)
		cancel()
		if err == nil {
			t.Errorf("the %s user read the fleet key (%d bytes)", user, len(got))
		}
	}
}

// Issue 12, shared replies: under deploy/nats.conf every client is the
// client user, so a spy may subscribe to _INBOX_client.> and read the
// replies meant for another client. What a reply there gives another
// client must be useless to the spy: the rootfs grant, a one-use URL, is
// sealed to the asker (pkg/rootfs); the spy finds no URL, the asker
// streams its tar.
func TestSecurityDeploySharedClientReplies(t *testing.T) {
	connect := startDeployServer(t)
	snapNC, _ := connect("snapshotter")
	const tarBody = "the victim's root filesystem"
	srv, err := rootfs.NewServer(rootfs.ServerConfig{Node: "node-1", Allow: func(context.Context, rootfs.Request) error { return nil }},
		rootfs.SourceFunc(func(_ context.Context, _ string, w io.Writer) error { _, err := io.WriteString(w, tarBody); return err }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, snapNC) }()
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		if err := <-done; err != nil {
			t.Errorf("rootfs Serve: %v", err)
		}
	})

	spyNC, _ := connect("client")
	spy := tapOn(t, spyNC, "_INBOX_client.>")
	victimNC, _ := connect("client")
	var s *rootfs.Stream
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err = rootfs.Open(t.Context(), victimNC, http.DefaultClient, "node-1", rootfs.Request{Build: "b1", SnapshotKey: "k1"})
		if err == nil || !errors.Is(err, rootfs.ErrUnreachable) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the server subscribes in Serve
	}
	if err != nil {
		t.Fatalf("the asking client: %v", err)
	}
	got, err := io.ReadAll(s)
	_ = s.Close()
	if err != nil || string(got) != tarBody {
		t.Errorf("the asking client streams %q, %v", got, err)
	}
	if len(spy.all()) == 0 {
		t.Fatal("the spy read no reply: the attack was not tried")
	}
	for _, m := range spy.all() {
		if bytes.Contains(m.Data, []byte(srv.URL())) {
			t.Errorf("the spy read a usable grant on %s: %s", m.Subject, m.Data)
		}
	}
}
