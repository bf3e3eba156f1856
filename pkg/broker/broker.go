// Package broker runs the embedded NATS server with JetStream that
// `stevedore up`, the one-shot CLI commands and the tests use. The fleet
// runs a standalone nats-server instead; everything else talks to either
// through the same client API.
//
// Vocabulary: a Server is one embedded nats-server; its store lives under
// Config.DataDir/jetstream. Connect returns an in-process client connection
// (no socket); ClientURL is the address for clients in other processes.
//
// A Server is standalone unless Config.ClusterName is set; then it is one
// node of a JetStream cluster. Each node has its own Name and DataDir,
// listens for routes from the other nodes on ClusterPort, and dials the
// Routes (ClusterURL of every node). JetStream elects a meta leader once a
// quorum of nodes has met; WaitJetStream waits for it. Streams and buckets
// created with Replicas: 3 then survive the loss of any one node.
package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config configures the embedded server.
type Config struct {
	// DataDir is where JetStream stores streams and buckets. Required.
	DataDir string
	// Host is the client listen address. Empty means 127.0.0.1.
	Host string
	// Port is the client port. Zero means 4222; RandomPort picks a free one.
	Port int
	// NoListen disables the client listener: only in-process connections.
	NoListen bool
	// HTTPPort enables the monitoring endpoints (/varz, /jsz, /healthz) on
	// Host. Zero disables them; RandomPort picks a free one.
	HTTPPort int
	// Name is the server name. Empty means "stevedore" for a standalone
	// server; a cluster node needs a Name of its own, unique in the cluster
	// (JetStream tells its peers apart by it).
	Name string
	// ReadyTimeout bounds start-up. Zero means 10s.
	ReadyTimeout time.Duration
	// Logs sends the server's own logs to stderr.
	Logs bool

	// ClusterName makes the server a node of the JetStream cluster of that
	// name; every node of one cluster has the same. Empty means a
	// standalone server, and then ClusterPort and Routes must be zero.
	ClusterName string
	// ClusterPort is where the node listens, on Host, for routes from the
	// other nodes. It is independent of NoListen. Zero means 6222;
	// RandomPort picks a free one (see ClusterURL).
	ClusterPort int
	// Routes are the URLs of the cluster's nodes,
	// nats-route://127.0.0.1:6222 (nats:// is accepted too). List every
	// node, this one included, so that all nodes share one list: the
	// server skips the route to itself, and JetStream takes the number of
	// routes as the cluster size to wait for before its first meta leader
	// election. Required with ClusterName.
	Routes []string
	// Password, when set, makes the server admit only connections that
	// authenticate as User with it (in-process ones through Connect
	// included), so that on a shared machine nobody but who holds it
	// reaches the fleet. Empty admits every connection.
	Password string
	// User is the one user Password belongs to. Empty means DefaultUser.
	User string
}

// DefaultUser is the user a Config with a Password and no User admits.
const DefaultUser = "stevedore"

// defaultClusterPort is the conventional NATS route port.
const defaultClusterPort = 6222

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = 4222
	}
	if c.Name == "" && c.ClusterName == "" {
		c.Name = "stevedore"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Second
	}
	if c.Password != "" && c.User == "" {
		c.User = DefaultUser
	}
	if c.ClusterName != "" && c.ClusterPort == 0 {
		c.ClusterPort = defaultClusterPort
	}
}

// Validate reports a configuration Start refuses.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("broker: empty data dir")
	}
	if c.ClusterName == "" {
		if c.ClusterPort != 0 || len(c.Routes) != 0 {
			return errors.New("broker: cluster port or routes without a cluster name")
		}
		return nil
	}
	if c.Name == "" {
		return fmt.Errorf("broker: cluster %s: a node needs a name of its own", c.ClusterName)
	}
	if len(c.Routes) == 0 {
		return fmt.Errorf("broker: cluster %s: no routes", c.ClusterName)
	}
	for _, r := range c.Routes {
		if _, err := routeURL(r); err != nil {
			return fmt.Errorf("broker: cluster %s: %w", c.ClusterName, err)
		}
	}
	return nil
}

// routeURL parses one of Config.Routes.
func routeURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", s, err)
	}
	if u.Scheme != "nats-route" && u.Scheme != "nats" {
		return nil, fmt.Errorf("route %q: scheme is not nats-route", s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return nil, fmt.Errorf("route %q: want nats-route://host:port", s)
	}
	return u, nil
}

// RandomPort asks for any free port.
const RandomPort = server.RANDOM_PORT

// ErrLocked is returned by Start when another process runs a server on the
// same data dir.
var ErrLocked = errors.New("data dir is in use by another process")

// Server is a running embedded nats-server.
type Server struct {
	ns   *server.Server
	lock *os.File
	// user and password are what Connect authenticates with.
	user, password string
}

// Start starts a server and waits until it accepts connections.
// A cluster node is ready when it accepts connections; JetStream in the
// cluster may still be electing its meta leader (see WaitJetStream).
func Start(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.DataDir, "broker.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("broker: %s: %w", cfg.DataDir, ErrLocked)
	}
	if err := checkAddrs(context.Background(), cfg); err != nil {
		_ = lock.Close()
		return nil, err
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.Host,
		Port:       cfg.Port,
		DontListen: cfg.NoListen,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoSigs:     true,
		NoLog:      !cfg.Logs,
		MaxPayload: 8 << 20,
		Username:   cfg.User,
		Password:   cfg.Password,
	}
	if cfg.Password == "" {
		opts.Username = ""
	}
	if cfg.HTTPPort != 0 {
		opts.HTTPHost = cfg.Host
		opts.HTTPPort = cfg.HTTPPort
	}
	if cfg.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: cfg.Host, Port: cfg.ClusterPort}
		for _, r := range cfg.Routes {
			u, _ := routeURL(r) // checked by Validate
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.Logs {
		ns.ConfigureLogger()
	}
	ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		_ = lock.Close()
		return nil, fmt.Errorf("broker: not ready after %s", cfg.ReadyTimeout)
	}
	return &Server{ns: ns, lock: lock, user: cfg.User, password: cfg.Password}, nil
}

// ClientURL is the nats:// URL clients in other processes use; empty when
// the server does not listen.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// ClusterURL is the nats-route:// URL the other nodes of the cluster list
// in their Routes; empty for a standalone server.
func (s *Server) ClusterURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}

// Name is the server name (Config.Name), which JetStream reports as the
// leader or a replica of a stream.
func (s *Server) Name() string { return s.ns.Name() }

// WaitJetStream waits until JetStream on this server serves requests: at
// once for a standalone server, and for a cluster node once the cluster
// has a meta leader and this node is current with it. It returns the
// cause of ctx's end, joined with what the server last reported, if that
// comes first. Creating a stream with more replicas than nodes that have
// joined so far still fails; callers retry that.
func (s *Server) WaitJetStream(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		h := s.ns.Healthz(&server.HealthzOptions{JSMetaOnly: true})
		if h.StatusCode == http.StatusOK {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("broker: %s: jetstream not ready: %w", s.Name(), errors.Join(context.Cause(ctx), errors.New(h.Error)))
		}
	}
}

// JetStreamPeers names the nodes of the cluster that JetStream can place
// streams on now (online, with JetStream, and known to the meta leader
// by their stats), when s is the meta leader; nil on any other node and
// on a single server.
func (s *Server) JetStreamPeers() []string { return s.ns.JetStreamClusterPeers() }

// MonitorURL is the http:// base URL of the monitoring endpoints, empty when
// they are disabled.
func (s *Server) MonitorURL() string {
	if a := s.ns.MonitorAddr(); a != nil {
		return "http://" + a.String()
	}
	return ""
}

// Connect opens an in-process client connection.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns)}, opts...)
	if s.password != "" {
		opts = append([]nats.Option{nats.UserInfo(s.user, s.password)}, opts...)
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: connect %s: %w", name, err)
	}
	return nc, nil
}

// Shutdown stops the server, waits until it has stopped and releases the
// data dir.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	// Unlock before closing (see snapshot.Store.Close): a forked child that
	// has not exec'd yet shares the lock's open file.
	_ = syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
	_ = s.lock.Close()
}

// DisconnectClients closes every client connection from the server side,
// as a network failure would; clients reconnect if they are set up to.
func (s *Server) DisconnectClients() error {
	conns, err := s.ns.Connz(&server.ConnzOptions{})
	if err != nil {
		return err
	}
	for _, c := range conns.Conns {
		if err := s.ns.DisconnectClientByID(c.Cid); err != nil {
			return err
		}
	}
	return nil
}
