// Package broker runs the embedded NATS server with JetStream that
// `stevedore up`, the one-shot CLI commands and the tests use. The fleet
// runs a standalone nats-server instead; everything else talks to either
// through the same client API.
//
// Vocabulary: a Server is one embedded nats-server; its store lives under
// Config.DataDir/jetstream. Connect returns an in-process client connection
// (no socket); ClientURL is the address for clients in other processes.
package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// Name is the server name. Empty means "stevedore".
	Name string
	// ReadyTimeout bounds start-up. Zero means 10s.
	ReadyTimeout time.Duration
	// Logs sends the server's own logs to stderr.
	Logs bool
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
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("broker: empty data dir")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 4222
	}
	if cfg.Name == "" {
		cfg.Name = "stevedore"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
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
	}
	if cfg.HTTPPort != 0 {
		opts.HTTPHost = cfg.Host
		opts.HTTPPort = cfg.HTTPPort
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
	return &Server{ns: ns, lock: lock}, nil
}

// ClientURL is the nats:// URL clients in other processes use; empty when
// the server does not listen.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

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
