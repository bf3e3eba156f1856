package broker_test

import (
	"context"
	"errors"
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
		}, "broker: not ready after 300ms"},
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
