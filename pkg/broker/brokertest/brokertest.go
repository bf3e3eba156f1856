// Package brokertest starts a JetStream cluster of embedded nats-server
// nodes inside one test: every node is a broker.Server with its store in
// t.TempDir(), listening on 127.0.0.1 for clients (a random port) and for
// routes (a port reserved just before start), with routes to every node.
//
// Lifecycle: StartCluster waits until no other cluster runs on the
// machine, then returns once every node has JetStream current with an
// elected meta leader; Stop shuts one node down (as an operator or a
// failure would); Restart starts a stopped node again on its store and
// ports; the test's cleanup shuts down the rest.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/broker"
)

// ClusterName is the name of the clusters StartCluster starts.
const ClusterName = "stevedore-test"

// startAttempts bounds how often StartCluster tries again when a reserved
// route port was taken by someone else before the node could listen on it.
const startAttempts = 3

// Cluster is a running JetStream cluster.
type Cluster struct {
	// Nodes are the nodes in start order, named node-1, node-2, ...; a
	// stopped node stays in the list.
	Nodes []*broker.Server

	urls []string
	cfgs []broker.Config
}

// StartCluster starts an n-node cluster, waits (up to 30s) until every
// node is current with a meta leader, and shuts every node down at the
// end of the test. Only one cluster runs at a time on the machine: it
// first waits for any other test's cluster, in this process or another,
// to be shut down.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if err := exclusive(t); err != nil {
		t.Fatal(err)
	}
	var errs []error
	for range startAttempts {
		c, err := start(t, n)
		if err == nil {
			ctx, cancel := context.WithTimeoutCause(context.Background(), 30*time.Second, errors.New("cluster not ready within 30s"))
			defer cancel()
			for _, node := range c.Nodes {
				if err := node.WaitJetStream(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// A meta leader is not enough to place an R3 stream: it must
			// know every peer as online, which takes their first stats.
			if err := c.waitPeers(ctx, n); err != nil {
				t.Fatal(err)
			}
			return c
		}
		errs = append(errs, err)
	}
	t.Fatalf("start a %d-node cluster: %v", n, errors.Join(errs...))
	return nil
}

// waitPeers waits until the meta leader counts n peers JetStream can
// place streams on.
func (c *Cluster) waitPeers(ctx context.Context, n int) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, node := range c.Nodes {
			if len(node.JetStreamPeers()) >= n {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("brokertest: fewer than %d JetStream peers online: %w", n, context.Cause(ctx))
		}
	}
}

// start starts the nodes once; on an error the nodes it started are shut
// down again.
func start(t testing.TB, n int) (*Cluster, error) {
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{}
	for i := range n {
		cfg := broker.Config{
			DataDir:     t.TempDir(),
			Port:        broker.RandomPort,
			Name:        fmt.Sprintf("node-%d", i+1),
			ClusterName: ClusterName,
			ClusterPort: ports[i],
			Routes:      routes,
		}
		srv, err := broker.Start(cfg)
		if err != nil {
			for _, s := range c.Nodes {
				s.Shutdown()
			}
			return nil, fmt.Errorf("node-%d: %w", i+1, err)
		}
		t.Cleanup(srv.Shutdown)
		c.Nodes = append(c.Nodes, srv)
		c.urls = append(c.urls, srv.ClientURL())
		cfg.Port = clientPort(srv)
		c.cfgs = append(c.cfgs, cfg)
	}
	return c, nil
}

// freePorts returns n ports on 127.0.0.1 that were free a moment ago. The
// nodes' routes must name each other before any of them listens, so the
// ports cannot be picked at listen time.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a route port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ClientURLs is every node's client URL, comma-separated, as nats.Connect
// takes a server list; stopped nodes are still listed (a client skips
// them).
func (c *Cluster) ClientURLs() string { return strings.Join(c.urls, ",") }

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *broker.Server {
	for _, n := range c.Nodes {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// Stop shuts down the node named name and waits until it has stopped; the
// test fails if there is none.
func (c *Cluster) Stop(t testing.TB, name string) {
	t.Helper()
	n := c.Node(name)
	if n == nil {
		t.Fatalf("no cluster node named %q", name)
	}
	n.Shutdown()
}

// Restart starts the stopped node named name again, on its store, client
// port and route port, and returns once it accepts connections (JetStream
// may still be catching up); the test fails if there is none or it does
// not start.
func (c *Cluster) Restart(t testing.TB, name string) *broker.Server {
	t.Helper()
	for i, n := range c.Nodes {
		if n.Name() != name {
			continue
		}
		srv, err := broker.Start(c.cfgs[i])
		if err != nil {
			t.Fatalf("restart %s: %v", name, err)
		}
		t.Cleanup(srv.Shutdown)
		c.Nodes[i] = srv
		return srv
	}
	t.Fatalf("no cluster node named %q", name)
	return nil
}

// clientPort is the port of srv's client URL.
func clientPort(srv *broker.Server) int {
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		return broker.RandomPort
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		return broker.RandomPort
	}
	return p
}
