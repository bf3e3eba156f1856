package fleettest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/broker/brokertest"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// A fleet on a three-node JetStream cluster with R3 streams, buckets and
// consumers finishes a pull whose node goes away in the middle of it: a
// node that every service is connected to and that leads the events
// stream (or the snapshotter's consumer) shuts down while the snapshotter
// holds a layer download. The build still ends with one snapshot.ready,
// the stream holds each of its events once, and a second pull of the image
// is a cache hit.
//
// Not parallel, and the cases one after the other: one cluster at a time,
// alone (brokertest also keeps other packages' clusters out), so that its
// leases and AckWaits are not at the mercy of another cluster's load.
func TestClusterLosesANodeMidBuild(t *testing.T) {
	for _, tc := range []clusterVictim{
		{what: "events stream leader",
			leader:   func(t *testing.T, js jetstream.JetStream) string { return streamLeader(t, js, "") },
			stepdown: fmt.Sprintf(jsStreamStepdown, events.StreamEvents)},
		{what: "snapshotter consumer leader",
			leader: func(t *testing.T, js jetstream.JetStream) string {
				return consumerLeader(t, js, events.ConsumerSnapshotter)
			},
			stepdown: fmt.Sprintf(jsConsumerStepdown, events.StreamEvents, events.ConsumerSnapshotter)},
	} {
		t.Run(tc.what, func(t *testing.T) {
			testenv.Root(t, "the snapshotter extracts image layers with their owners")
			loseANodeMidBuild(t, tc)
		})
	}
}

// The JetStream API subjects that ask a stream's or a consumer's leader
// to step down (nats-server's JSApiStreamLeaderStepDownT and
// JSApiConsumerLeaderStepDownT).
const (
	jsStreamStepdown   = "$JS.API.STREAM.LEADER.STEPDOWN.%s"
	jsConsumerStepdown = "$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s"
)

// clusterVictim is what the node stopped mid-build leads.
type clusterVictim struct {
	// what names it (and the subtest).
	what string
	// leader waits for its leader and returns the node's name.
	leader func(t *testing.T, js jetstream.JetStream) string
	// stepdown is the JetStream API subject that makes its leader step
	// down.
	stepdown string
}

// leadOn makes node the leader of v: while another node leads, that
// leader is asked to step down in favour of node.
func leadOn(t *testing.T, nc *nats.Conn, js jetstream.JetStream, v clusterVictim, node string) {
	t.Helper()
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": node}})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, v.what+" on "+node, 30*time.Second, func(ctx context.Context) error {
		leader := v.leader(t, js)
		if leader == node {
			return nil
		}
		reply, err := nc.RequestWithContext(ctx, v.stepdown, req)
		if err != nil {
			return fmt.Errorf("led by %s; stepdown: %w", leader, err)
		}
		return fmt.Errorf("led by %s; asked it to step down: %s", leader, reply.Data)
	})
}

// loseANodeMidBuild runs one build on a fresh cluster and stops the node
// that leads v (asked before the services connect, so that they all
// connect to it) while the build is halfway.
func loseANodeMidBuild(t *testing.T, v clusterVictim) {
	what := v.what
	start := time.Now()
	c := brokertest.StartCluster(t, 3)
	logs := captureLogs()
	t.Cleanup(func() {
		// After the services have stopped (cleanups run last first).
		if t.Failed() {
			t.Logf("service logs:\n%s", logs.String())
		} else if w := logs.warnings(); w != "" {
			t.Logf("what the services reported:\n%s", w)
		}
	})
	t.Logf("cluster up after %s", time.Since(start).Round(time.Millisecond))

	// The test's own connection knows every node.
	nc, js := connect(t, "test", c.ClientURLs())
	poll(t, "provision the R3 topology", 30*time.Second, func(ctx context.Context) error {
		// Until the meta leader has heard of every node, R3 is refused.
		return bus.Provision(ctx, js, bus.Topology{Replicas: 3, Consumers: []bus.Consumer{
			bus.ResolverConsumer(), fleettest.PullerConsumer(), fleettest.SnapshotterConsumer(), fleettest.ExporterConsumer(),
		}})
	})
	nodes := map[string]bool{}
	for _, n := range c.Nodes {
		nodes[n.Name()] = true
	}
	requireR3(t, js, nodes)
	t.Logf("R3 topology provisioned after %s", time.Since(start).Round(time.Millisecond))

	// Every service reaches the cluster through the whole server list, the
	// node that will go away first, so they all start on it. The test's
	// connection starts on another node.
	doomed := v.leader(t, js)
	services := first(c.ClientURLs(), c.Node(doomed).ClientURL())
	if nc.ConnectedServerName() == doomed {
		nc, js = connect(t, "test-2", last(c.ClientURLs(), c.Node(doomed).ClientURL()))
	}

	reg := registrytest.New(t)
	s := &fleettest.Stack{
		Env:            &bustest.Env{Server: c.Nodes[0], NC: nc, JS: js},
		Registry:       reg,
		RegistryConfig: registry.Config{DockerConfigDir: t.TempDir()},
	}
	fleet := &fleet{t: t, urls: services, logger: logs.logger, reg: s.RegistryConfig}
	fleet.resolver()
	fleet.puller("p1")
	fleet.puller("p2")
	node := fleet.snapshotter("node1")
	ref := s.Push(t, "single", "cluster/single:1")

	// The first blob GET is the puller's config fetch and passes; the
	// next is the snapshotter's first layer, which is held.
	reg.Gate("GET", registrytest.KindBlob).Release()
	layer := reg.Gate("GET", registrytest.KindBlob)
	defer layer.Release()

	rec, buildID := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	// The replicas may still be starting: on a loaded cluster their
	// lookups wait for JetStream (service.Spec.Patient).
	select {
	case <-layer.Arrived():
	case <-time.After(90 * time.Second):
		t.Fatalf("the snapshotter never asked for a layer; recorded: %v", bustest.Summary(rec.Events()))
	}
	// A snapshot.requested means the puller is done with the config, so
	// the held GET is the snapshotter's. (The wait is long because the
	// watcher itself, an ordered consumer, now and then delivers nothing
	// until the client recreates it after two missed 5s heartbeats.)
	rec.Wait(t, 30*time.Second, events.TypeSnapshotRequested)
	t.Logf("snapshotter holding a layer %s into the test", time.Since(start).Round(time.Millisecond))
	if n := len(rec.OfType(events.TypeSnapshotReady)); n != 0 {
		t.Fatalf("%d snapshot.ready before the layer was released", n)
	}

	// Stop the node the services connected to, once it leads v again
	// (leadership may have moved since), then let the layer through. The
	// premise: it leads v, and services are on it.
	victim := doomed
	leadOn(t, nc, js, v, victim)
	onVictim := map[string]*nats.Conn{}
	for name, conn := range fleet.conns() {
		if conn.ConnectedServerName() == victim {
			onVictim[name] = conn
		}
	}
	if len(onVictim) == 0 {
		t.Fatalf("no service is on %s, the node to stop: the test would not see one reconnect", victim)
	}
	t.Logf("leaders: events stream %s, resolver %s, puller %s, snapshotter %s", streamLeader(t, js, ""),
		consumerLeader(t, js, events.ConsumerResolver), consumerLeader(t, js, events.ConsumerPuller), consumerLeader(t, js, events.ConsumerSnapshotter))
	stopped := time.Now()
	c.Stop(t, victim)
	t.Logf("stopped %s (%s, serving %d of %d services) %s into the test",
		victim, what, len(onVictim), len(fleet.conns()), stopped.Sub(start).Round(time.Millisecond))
	layer.Release()

	ready := fleettest.Ready(t, rec)
	seen := time.Now()
	readyEvent := rec.OfType(events.TypeSnapshotReady)[0]
	// The watcher can lag: its ordered consumer may have lived on the
	// stopped node, and the client only recreates it after two missed
	// heartbeats.
	t.Logf("snapshot.ready emitted %s after the stop, seen by the watcher %s after that",
		readyEvent.Time.Sub(stopped).Round(time.Millisecond), seen.Sub(readyEvent.Time).Round(time.Millisecond))
	if ready.Node != node {
		t.Errorf("snapshot made on %q, want %q", ready.Node, node)
	}
	if next := streamLeader(t, js, victim); next == victim {
		t.Errorf("events stream still led by the stopped node %s", victim)
	}
	if next := consumerLeader(t, js, events.ConsumerSnapshotter); next == victim {
		t.Errorf("snapshotter consumer still led by the stopped node %s", victim)
	}
	for name, conn := range fleet.conns() {
		if got := conn.ConnectedServerName(); got == victim || !conn.IsConnected() {
			t.Errorf("%s is on %q (connected: %v) after %s stopped", name, got, conn.IsConnected(), victim)
		}
	}
	for name, conn := range onVictim {
		if conn.Stats().Reconnects == 0 {
			t.Errorf("%s was on %s and never reconnected", name, victim)
		}
	}

	// Let a straggler that retried past the end publish, then read the
	// build back from the stream itself: every event once.
	s.ConsumerIdle(t, events.ConsumerPuller)
	s.ConsumerIdle(t, events.ConsumerSnapshotter)
	stored := replay(t, js, buildID)
	once(t, "stored", stored)
	once(t, "watched", rec.Events())
	for _, typ := range []events.Type{events.TypeSourceResolveRequested, events.TypeCacheMiss, events.TypeSnapshotRequested, events.TypeSnapshotReady} {
		if n := count(stored, typ); n != 1 {
			t.Errorf("%d %s events stored, want 1", n, events.NameOf(typ))
		}
	}
	if n := count(stored, events.TypeSourceFailed) + count(stored, events.TypeSnapshotFailed); n != 0 {
		t.Errorf("%d failures stored: %v", n, bustest.Summary(stored))
	}
	if errs := rec.Errors(); len(errs) != 0 {
		t.Errorf("the watcher read undecodable messages: %v", errs)
	}

	// The cache record survived too: the same image again is a hit on the
	// node that made the snapshot.
	t.Logf("consumers idle and the build replayed %s after snapshot.ready was seen", time.Since(seen).Round(time.Millisecond))
	second := time.Now()
	hit := fleettest.PullEnd(t, s.Pull(t, "docker-image://"+ref, "linux/amd64"))
	t.Logf("second pull ended after %s", time.Since(second).Round(time.Millisecond))
	if h, ok := hit.Data.(events.CacheHit); !ok || h.Record.Node != node || h.Key.Index != 0 {
		t.Errorf("second pull ended with %v %+v, want a cache.hit at index 0 on %s", bustest.Summary([]events.Event{hit}), hit.Data, node)
	}
	fleet.stopAll()
}

// fleet starts service replicas, each on its own connection to the
// cluster, and notices at once when one of them exits.
type fleet struct {
	t      *testing.T
	urls   string
	logger *slog.Logger
	reg    registry.Config

	mu    sync.Mutex
	nc    map[string]*nats.Conn
	stops []func()
}

func (f *fleet) conn(name string) jetstream.JetStream {
	nc, js := connect(f.t, name, f.urls)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nc == nil {
		f.nc = map[string]*nats.Conn{}
	}
	f.nc[name] = nc
	return js
}

// conns returns each replica's connection by name.
func (f *fleet) conns() map[string]*nats.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.nc)
}

// run runs a replica until stopAll or the end of the test. A replica
// that returns before it is stopped fails the test right away, with its
// error: a fleet member that gives up when a node dies is the bug this
// test is after.
func (f *fleet) run(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	stopping := make(chan struct{})
	go func() {
		err := run(ctx)
		select {
		case <-stopping:
		default:
			f.t.Errorf("%s exited while the fleet was running: %v", name, err)
			err = nil // reported
		}
		done <- err
	}()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			close(stopping)
			cancel(errors.New("test over"))
			if err := <-done; err != nil {
				f.t.Errorf("%s: %v", name, err)
			}
		})
	}
	f.mu.Lock()
	f.stops = append(f.stops, stop)
	f.mu.Unlock()
	f.t.Cleanup(stop)
}

func (f *fleet) stopAll() {
	f.mu.Lock()
	stops := slices.Clone(f.stops)
	f.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

func (f *fleet) resolver() {
	r, err := resolver.New(f.conn("resolver"), resolver.Config{Replica: service.Replica{Instance: "r1", Logger: f.logger.With("replica", "r1")},
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.run("resolver", r.Run)
}

func (f *fleet) puller(instance string) {
	p, err := puller.New(f.conn(instance), puller.Config{
		Replica: service.Replica{Instance: instance, Consumer: fleettest.PullerConsumer(), Concurrency: 8,
			Backoff: bus.ExponentialBackoff(20*time.Millisecond, 200*time.Millisecond), Logger: f.logger.With("replica", instance)},
		Registry: f.reg,
		LeaseTTL: 2 * time.Second,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.run(instance, p.Run)
}

func (f *fleet) snapshotter(node string) string {
	svc, err := snapshotter.New(f.t.Context(), f.conn(node), snapshotter.Config{
		DataDir:  f.t.TempDir(),
		Node:     node,
		Registry: f.reg,
		LeaseTTL: 2 * time.Second,
		Replica: service.Replica{Consumer: fleettest.SnapshotterConsumer(),
			Backoff: bus.ExponentialBackoff(20*time.Millisecond, 200*time.Millisecond), Logger: f.logger.With("replica", node)},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = svc.Close() })
	f.run(node, svc.Run)
	return node
}

// connect connects the way a service binary does (bus.Connect: retry,
// reconnect forever) to a comma-separated server list, trying the servers
// in the order given.
func connect(t *testing.T, name, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := bus.Connect(urls, name, nats.DontRandomize(), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// first reorders a comma-separated server list to start with url.
func first(urls, url string) string {
	rest := slices.DeleteFunc(strings.Split(urls, ","), func(u string) bool { return u == url })
	return strings.Join(append([]string{url}, rest...), ",")
}

// last reorders a comma-separated server list to end with url.
func last(urls, url string) string {
	rest := slices.DeleteFunc(strings.Split(urls, ","), func(u string) bool { return u == url })
	return strings.Join(append(rest, url), ",")
}

// requireR3 checks that the events stream, every bucket and every
// consumer has a leader and two replicas, together the three nodes.
func requireR3(t *testing.T, js jetstream.JetStream, nodes map[string]bool) {
	t.Helper()
	check := func(what string, ci *jetstream.ClusterInfo) {
		t.Helper()
		if ci == nil || ci.Leader == "" {
			t.Errorf("%s has no leader: %+v", what, ci)
			return
		}
		members := map[string]bool{ci.Leader: true}
		for _, r := range ci.Replicas {
			members[r.Name] = true
		}
		if len(ci.Replicas) != 2 || len(members) != 3 || !maps.Equal(members, nodes) {
			t.Errorf("%s: leader %s and %d replicas %+v, want all of %v", what, ci.Leader, len(ci.Replicas), ci.Replicas, nodes)
		}
	}
	poll(t, "every asset elects a leader", 20*time.Second, func(ctx context.Context) error {
		for _, name := range assetStreams() {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return err
			}
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("stream %s: %+v", name, info.Cluster)
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeoutCause(t.Context(), 10*time.Second, errors.New("asset info timed out"))
	defer cancel()
	for _, name := range assetStreams() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s: Replicas %d, want 3", name, info.Config.Replicas)
		}
		check("stream "+name, info.Cluster)
	}
	for _, name := range []string{events.ConsumerResolver, events.ConsumerPuller, events.ConsumerSnapshotter, events.ConsumerExporter} {
		var info *jetstream.ConsumerInfo
		poll(t, "consumer "+name+" leader", 20*time.Second, func(ctx context.Context) error {
			cons, err := js.Consumer(ctx, events.StreamEvents, name)
			if err != nil {
				return err
			}
			if info, err = cons.Info(ctx); err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return errors.New("no leader yet")
			}
			return nil
		})
		check("consumer "+name, info.Cluster)
	}
}

// consumerLeader waits until the service consumer name has a leader and
// returns its name.
func consumerLeader(t *testing.T, js jetstream.JetStream, name string) string {
	t.Helper()
	var leader string
	poll(t, "consumer "+name+" leader", 20*time.Second, func(ctx context.Context) error {
		cons, err := js.Consumer(ctx, events.StreamEvents, name)
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no leader yet")
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader
}

// assetStreams are the streams the topology provisions, the KV buckets'
// included.
func assetStreams() []string {
	out := []string{events.StreamEvents, events.StreamAdvisories, events.StreamDLQ}
	for _, b := range []string{events.BucketCacheIndex, events.BucketManifests, events.BucketLeases, events.BucketSnapshots} {
		out = append(out, "KV_"+b)
	}
	return out
}

// streamLeader waits until the events stream has a leader other than not
// and returns its name.
func streamLeader(t *testing.T, js jetstream.JetStream, not string) string {
	t.Helper()
	var leader string
	poll(t, "events stream leader", 20*time.Second, func(ctx context.Context) error {
		st, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == not {
			return fmt.Errorf("leader %+v", info.Cluster)
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader
}

// replay reads buildID's events back from the stream.
func replay(t *testing.T, js jetstream.JetStream, buildID string) []events.Event {
	t.Helper()
	var es []events.Event
	poll(t, "replay "+buildID, 20*time.Second, func(ctx context.Context) error {
		var err error
		es, err = bus.Replay(ctx, js, buildID)
		return err
	})
	return es
}

// once fails the test if two events share an id (Nats-Msg-Id).
func once(t *testing.T, what string, es []events.Event) {
	t.Helper()
	seen := map[string]int{}
	for _, e := range es {
		seen[e.ID]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%s: event %s %d times", what, id, n)
		}
	}
}

func count(es []events.Event, typ events.Type) int {
	n := 0
	for _, e := range es {
		if e.Type() == typ {
			n++
		}
	}
	return n
}

// poll calls f until it succeeds, failing the test after limit. Each
// attempt gets a quarter of limit, at most 10s: provisioning an R3
// topology takes seconds while the cluster forms its RAFT groups. Slow
// failed attempts are logged.
func poll(t *testing.T, what string, limit time.Duration, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	attempt := min(limit/4, 10*time.Second)
	for {
		began := time.Now()
		ctx, cancel := context.WithTimeoutCause(t.Context(), attempt, errors.New(what+": attempt timed out"))
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if took := time.Since(began); took > time.Second {
			t.Logf("%s: an attempt failed after %s: %v", what, took.Round(time.Millisecond), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logBuffer collects the services' logs, printed when the test fails.
type logBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	logger *slog.Logger
}

func captureLogs() *logBuffer {
	lb := &logBuffer{}
	lb.logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return lb
}

func (lb *logBuffer) Write(p []byte) (int, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.buf.Write(p)
}

// warnings returns the lines logged at WARN or above.
func (lb *logBuffer) warnings() string {
	var out []string
	for line := range strings.Lines(lb.String()) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

func (lb *logBuffer) String() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.buf.String()
}
