package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/broker/brokertest"
)

const waitFor = 10 * time.Second

// start starts a server and shuts it down at the end of the test.
func start(t *testing.T, cfg broker.Config) *broker.Server {
	t.Helper()
	srv, err := broker.Start(cfg)
	if err != nil {
		t.Fatalf("Start(%+v): %v", cfg, err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// roundTrip checks that nc can send a request and get the reply through
// the server.
func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(append([]byte("re: "), m.Data...)) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	reply, err := nc.Request("echo", []byte("hi"), waitFor)
	if err != nil {
		t.Fatalf("request through the server: %v", err)
	}
	if string(reply.Data) != "re: hi" {
		t.Errorf("reply = %q, want %q", reply.Data, "re: hi")
	}
}

func TestStartListening(t *testing.T) {
	t.Parallel()
	srv := start(t, broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort})
	url := srv.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL() = %q, want nats://127.0.0.1:<port>", url)
	}
	if port, err := strconv.Atoi(strings.TrimPrefix(url, "nats://127.0.0.1:")); err != nil || port <= 0 || port == 4222 {
		t.Errorf("ClientURL() = %q: want a random port", url)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("nats.Connect(%q): %v", url, err)
	}
	t.Cleanup(nc.Close)
	roundTrip(t, nc)
	if got := nc.ConnectedServerName(); got != "stevedore" {
		t.Errorf("server name = %q, want the default stevedore", got)
	}
	if got := srv.MonitorURL(); got != "" {
		t.Errorf("MonitorURL() = %q without HTTPPort, want empty", got)
	}
}

func TestStartNoListen(t *testing.T) {
	t.Parallel()
	srv := start(t, broker.Config{DataDir: t.TempDir(), NoListen: true, Name: "inproc"})
	if got := srv.ClientURL(); got != "" {
		t.Errorf("ClientURL() = %q with NoListen, want empty", got)
	}
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	roundTrip(t, nc)
	if got := nc.ConnectedServerName(); got != "inproc" {
		t.Errorf("server name = %q, want inproc", got)
	}
}

func TestMonitor(t *testing.T) {
	t.Parallel()
	srv := start(t, broker.Config{DataDir: t.TempDir(), NoListen: true, HTTPPort: broker.RandomPort})
	base := srv.MonitorURL()
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("MonitorURL() = %q, want http://127.0.0.1:<port>", base)
	}
	for _, path := range []string{"/healthz", "/varz", "/jsz"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			defer func() { _ = resp.Body.Close() }()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s = %s, want 200", path, resp.Status)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	busy, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = busy.Close() })
	for _, tc := range []struct {
		name string
		cfg  broker.Config
		want string
	}{
		{"empty data dir", broker.Config{Port: broker.RandomPort}, "broker: empty data dir"},
		{"port in use", broker.Config{
			DataDir:      t.TempDir(),
			Port:         busy.Addr().(*net.TCPAddr).Port,
			ReadyTimeout: 300 * time.Millisecond,
		}, fmt.Sprintf("broker: client address %s: address already in use (another process listens there; pick another port)", busy.Addr())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, err := broker.Start(tc.cfg)
			if err == nil {
				srv.Shutdown()
				t.Fatalf("Start(%+v) = nil error, want %q", tc.cfg, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Start error = %q, want %q", err, tc.want)
			}
		})
	}
}

func TestDisconnectClients(t *testing.T) {
	t.Parallel()
	srv := start(t, broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort})
	disconnected := make(chan struct{}, 1)
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(srv.ClientURL(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			select {
			case disconnected <- struct{}{}:
			default:
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	roundTrip(t, nc)

	if err := srv.DisconnectClients(); err != nil {
		t.Fatalf("DisconnectClients: %v", err)
	}
	for _, step := range []struct {
		name string
		ch   chan struct{}
	}{{"disconnect", disconnected}, {"reconnect", reconnected}} {
		select {
		case <-step.ch:
		case <-time.After(waitFor):
			t.Fatalf("no %s within %s", step.name, waitFor)
		}
	}
	roundTrip(t, nc)
	if got := nc.Stats().Reconnects; got < 1 {
		t.Errorf("Reconnects = %d, want at least 1", got)
	}
}

// DisconnectClients with nobody connected is not an error.
func TestDisconnectNoClients(t *testing.T) {
	t.Parallel()
	srv := start(t, broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort})
	if err := srv.DisconnectClients(); err != nil {
		t.Errorf("DisconnectClients: %v", err)
	}
}

// jsConnect opens an in-process connection with JetStream.
func jsConnect(t *testing.T, srv *broker.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestJetStreamSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("jetstream call timed out"))
	defer cancel()

	// Shutdown twice (here and in the cleanup) must be harmless.
	srv := start(t, broker.Config{DataDir: dir, NoListen: true})
	nc, js := jsConnect(t, srv)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	ack, err := js.Publish(ctx, "t.one", []byte("payload"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	before, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatalf("GetMsg before restart: %v", err)
	}
	nc.Close()
	srv.Shutdown()

	srv = start(t, broker.Config{DataDir: dir, NoListen: true})
	_, js = jsConnect(t, srv)
	stream, err = js.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	after, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatalf("GetMsg after restart: %v", err)
	}
	type msg struct {
		Subject string
		Data    string
		Seq     uint64
	}
	if diff := cmp.Diff(msg{"t.one", "payload", 1}, msg{before.Subject, string(before.Data), before.Sequence}); diff != "" {
		t.Errorf("message before restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(msg{"t.one", "payload", 1}, msg{after.Subject, string(after.Data), after.Sequence}); diff != "" {
		t.Errorf("message after restart (-want +got):\n%s", diff)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages after restart, want 1", info.State.Msgs)
	}
}

func TestSecondServerOnADataDirIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := broker.Start(broker.Config{DataDir: dir, Port: broker.RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broker.Start(broker.Config{DataDir: dir, Port: broker.RandomPort}); !errors.Is(err, broker.ErrLocked) {
		t.Errorf("second Start = %v, want ErrLocked", err)
	}
	srv.Shutdown()
	again, err := broker.Start(broker.Config{DataDir: dir, Port: broker.RandomPort})
	if err != nil {
		t.Fatalf("Start after Shutdown = %v", err)
	}
	again.Shutdown()
}

// A standalone server has no cluster URL and keeps its default name.
func TestStandaloneHasNoCluster(t *testing.T) {
	t.Parallel()
	srv := start(t, broker.Config{DataDir: t.TempDir(), NoListen: true})
	if got := srv.ClusterURL(); got != "" {
		t.Errorf("ClusterURL() = %q for a standalone server, want empty", got)
	}
	if got := srv.Name(); got != "stevedore" {
		t.Errorf("Name() = %q, want stevedore", got)
	}
	ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("jetstream not ready"))
	defer cancel()
	if err := srv.WaitJetStream(ctx); err != nil {
		t.Errorf("WaitJetStream on a standalone server: %v", err)
	}
}

func TestClusterConfigErrors(t *testing.T) {
	t.Parallel()
	route := []string{"nats-route://127.0.0.1:6222"}
	for _, tc := range []struct {
		name string
		cfg  broker.Config
		want string
	}{
		{"routes without a cluster", broker.Config{Routes: route}, "broker: cluster port or routes without a cluster name"},
		{"cluster port without a cluster", broker.Config{ClusterPort: broker.RandomPort}, "broker: cluster port or routes without a cluster name"},
		{"no node name", broker.Config{ClusterName: "c", Routes: route}, "broker: cluster c: a node needs a name of its own"},
		{"no routes", broker.Config{ClusterName: "c", Name: "n1"}, "broker: cluster c: no routes"},
		{"route scheme", broker.Config{ClusterName: "c", Name: "n1", Routes: []string{"http://127.0.0.1:6222"}},
			`broker: cluster c: route "http://127.0.0.1:6222": scheme is not nats-route`},
		{"route without port", broker.Config{ClusterName: "c", Name: "n1", Routes: []string{"nats-route://127.0.0.1"}},
			`broker: cluster c: route "nats-route://127.0.0.1": want nats-route://host:port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.DataDir = t.TempDir()
			cfg.Port = broker.RandomPort
			srv, err := broker.Start(cfg)
			if err == nil {
				srv.Shutdown()
				t.Fatalf("Start(%+v) = nil error, want %q", cfg, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Start error = %q, want %q", err, tc.want)
			}
			if verr := cfg.Validate(); verr == nil || verr.Error() != tc.want {
				t.Errorf("Validate() = %v, want %q", verr, tc.want)
			}
		})
	}
}

// A node started with ClusterPort RandomPort listens for routes on a port
// of its own and reports it as ClusterURL; a node that lists that URL
// joins it, and messages cross the route. (The first node's only route
// leads nowhere: it learns the second when that one dials in.)
func TestClusterRandomPort(t *testing.T) {
	t.Parallel()
	first := start(t, broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort, Name: "a",
		ClusterName: "pair", ClusterPort: broker.RandomPort, Routes: []string{"nats-route://127.0.0.1:1"}})
	url := first.ClusterURL()
	if !strings.HasPrefix(url, "nats-route://127.0.0.1:") || strings.HasSuffix(url, ":6222") {
		t.Fatalf("ClusterURL() = %q, want nats-route://127.0.0.1:<random port>", url)
	}
	second := start(t, broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort, Name: "b",
		ClusterName: "pair", ClusterPort: broker.RandomPort, Routes: []string{url}})

	sub, err := nats.Connect(first.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	if _, err := sub.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond([]byte(sub.ConnectedServerName())) }); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(second.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	// The subscription reaches the second node once the route is up.
	deadline := time.Now().Add(waitFor)
	for {
		reply, err := pub.Request("echo", nil, 100*time.Millisecond)
		if err == nil {
			if string(reply.Data) != "a" {
				t.Errorf("answered by %q, want a", reply.Data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer across the route within %s: %v", waitFor, err)
		}
	}
}

// Three nodes form a JetStream cluster with a meta leader; an R3 stream
// has a leader and two replicas, one on each node; with its leader shut
// down the stream elects another, keeps every acknowledged message, takes
// new ones and still drops a duplicate Nats-Msg-Id.
func TestClusterSurvivesLosingANode(t *testing.T) {
	t.Parallel()
	c := brokertest.StartCluster(t, 3)
	names := map[string]bool{}
	for _, n := range c.Nodes {
		if !strings.HasPrefix(n.ClusterURL(), "nats-route://127.0.0.1:") {
			t.Errorf("%s: ClusterURL() = %q", n.Name(), n.ClusterURL())
		}
		names[n.Name()] = true
	}
	nc, err := nats.Connect(c.ClientURLs(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// The meta leader may not have heard of every node yet: an R3 stream
	// is refused until it has.
	var stream jetstream.Stream
	poll(t, "create an R3 stream", func(ctx context.Context) error {
		stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"},
			Storage: jetstream.FileStorage, Replicas: 3, Duplicates: time.Minute})
		return err
	})
	info := streamLeader(t, stream)
	if got := len(info.Cluster.Replicas); got != 2 {
		t.Fatalf("stream has %d replicas besides its leader, want 2: %+v", got, info.Cluster)
	}
	members := map[string]bool{info.Cluster.Leader: true}
	for _, r := range info.Cluster.Replicas {
		members[r.Name] = true
	}
	if diff := cmp.Diff(names, members); diff != "" {
		t.Errorf("stream members (-nodes +members):\n%s", diff)
	}
	for i := range 5 {
		ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("publish timed out"))
		_, err := js.Publish(ctx, "t.before", []byte(strconv.Itoa(i)), jetstream.WithMsgID("before-"+strconv.Itoa(i)))
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	old := info.Cluster.Leader
	c.Stop(t, old)
	// Until the stream has a new leader a publish can fail; the client
	// retries, as the services do.
	poll(t, "publish after the leader stopped", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "t.after", []byte("5"), jetstream.WithMsgID("after"))
		return err
	})
	info = streamLeader(t, stream)
	if info.Cluster.Leader == old {
		t.Errorf("leader is still the stopped node %s", old)
	}
	ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("publish timed out"))
	defer cancel()
	ack, err := js.Publish(ctx, "t.before", []byte("0"), jetstream.WithMsgID("before-0"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate || ack.Sequence != 1 {
		t.Errorf("republished before-0: %+v, want a duplicate of sequence 1", ack)
	}

	var got []string
	for seq := uint64(1); seq <= 6; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		got = append(got, m.Subject+"="+string(m.Data))
	}
	want := []string{"t.before=0", "t.before=1", "t.before=2", "t.before=3", "t.before=4", "t.after=5"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stream content after losing %s (-want +got):\n%s", old, diff)
	}
	if info, err = stream.Info(ctx); err != nil {
		t.Fatal(err)
	} else if info.State.Msgs != 6 {
		t.Errorf("stream holds %d messages, want 6", info.State.Msgs)
	}
}

// poll calls f with a short deadline until it succeeds, failing the test
// after 20s.
func poll(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeoutCause(t.Context(), 2*time.Second, errors.New(what+": attempt timed out"))
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamLeader waits until stream reports a leader and returns its info.
func streamLeader(t *testing.T, stream jetstream.Stream) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	poll(t, "stream leader", func(ctx context.Context) error {
		var err error
		if info, err = stream.Info(ctx); err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no leader yet")
		}
		return nil
	})
	return info
}
