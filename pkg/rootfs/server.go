package rootfs

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Source writes the root filesystem of a snapshot as a tar stream
// (snapshot.Store.WriteTar does).
type Source interface {
	WriteTar(ctx context.Context, key string, w io.Writer) error
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, key string, w io.Writer) error

// WriteTar implements Source.
func (f SourceFunc) WriteTar(ctx context.Context, key string, w io.Writer) error {
	return f(ctx, key, w)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Node is the node name clients address (Subject). Required.
	Node string
	// Listen is the address of the HTTP endpoint. Empty means
	// "127.0.0.1:0": this machine only, any free port.
	Listen string
	// Advertise is the base URL clients reach the endpoint at
	// ("http://host:port"). Empty means http:// and the address listened
	// on.
	Advertise string
	// Allow decides whether a Request is answered (nil error) or refused
	// (the error's text goes back in the Grant). Nil refuses every
	// Request.
	Allow func(ctx context.Context, req Request) error
	// GrantTTL is how long a grant's URL can be used. Zero means a minute.
	GrantTTL time.Duration
	// Logger receives what could not be served. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *ServerConfig) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.GrantTTL == 0 {
		c.GrantTTL = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Allow == nil {
		c.Allow = func(context.Context, Request) error { return errors.New("this node grants no root filesystem") }
	}
}

// Validate reports a configuration a Server cannot run with.
func (c ServerConfig) Validate() error {
	if c.Node == "" {
		return errors.New("rootfs server: no node")
	}
	if c.GrantTTL < 0 {
		return errors.New("rootfs server: negative grant lifetime")
	}
	return nil
}

// Server answers Requests for one node and streams the granted tars.
type Server struct {
	cfg  ServerConfig
	src  Source
	ln   net.Listener
	base string

	// seal is the curve key pair grants are sealed with; sealPub its
	// public key.
	seal    nkeys.KeyPair
	sealPub string

	mu     sync.Mutex
	grants map[string]grant // by token
}

// grant is one usable URL.
type grant struct {
	key     string
	expires time.Time
}

var _ http.Handler = (*Server)(nil)

// NewServer listens on cfg.Listen; Serve answers.
func NewServer(cfg ServerConfig, src Source) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("rootfs server: %w", err)
	}
	base := strings.TrimSuffix(cfg.Advertise, "/")
	if base == "" {
		base = "http://" + ln.Addr().String()
	}
	seal, err := nkeys.CreateCurveKeys()
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("rootfs server: %w", err)
	}
	sealPub, err := seal.PublicKey()
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("rootfs server: %w", err)
	}
	return &Server{cfg: cfg, src: src, ln: ln, base: base, seal: seal, sealPub: sealPub, grants: map[string]grant{}}, nil
}

// URL is the base URL grants point at.
func (s *Server) URL() string { return s.base }

// Serve answers Requests on nc and serves the endpoint until ctx ends,
// then closes the listener.
func (s *Server) Serve(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(Subject(s.cfg.Node), func(m *nats.Msg) {
		go s.answer(ctx, m)
	})
	if err != nil {
		_ = s.ln.Close()
		return fmt.Errorf("rootfs server: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("rootfs server: %w", err)
		}
		return nil
	case err := <-done:
		return fmt.Errorf("rootfs server: %w", err)
	}
}

// answer grants or refuses one Request.
func (s *Server) answer(ctx context.Context, m *nats.Msg) {
	var req Request
	var g Grant
	if err := json.Unmarshal(m.Data, &req); err != nil {
		g.Error = "bad request: " + err.Error()
	} else if req.SnapshotKey == "" {
		g.Error = "bad request: no snapshot key"
	} else if !nkeys.IsValidPublicCurveKey(req.Key) {
		g.Error = "bad request: no public curve key to seal the grant to"
	} else if err := s.cfg.Allow(ctx, req); err != nil {
		g.Error = err.Error()
	} else {
		token := make([]byte, 32)
		_, _ = rand.Read(token)
		t := hex.EncodeToString(token)
		s.mu.Lock()
		now := time.Now()
		for k, old := range s.grants {
			if now.After(old.expires) {
				delete(s.grants, k)
			}
		}
		s.grants[t] = grant{key: req.SnapshotKey, expires: now.Add(s.cfg.GrantTTL)}
		s.mu.Unlock()
		sealed, err := s.seal.Seal([]byte(s.base+pathPrefix+t), req.Key)
		if err != nil {
			s.mu.Lock()
			delete(s.grants, t)
			s.mu.Unlock()
			g.Error = "seal the grant: " + err.Error()
		} else {
			g.SealedURL, g.SealedBy = sealed, s.sealPub
		}
	}
	data, _ := json.Marshal(g)
	if err := m.Respond(data); err != nil {
		s.cfg.Logger.Warn("rootfs: answer not sent", "error", err.Error())
	}
}

// ServeHTTP streams the tar of a granted URL, its digest as a trailer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, pathPrefix)
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	g, ok := s.grants[token]
	delete(s.grants, token)
	s.mu.Unlock()
	if !ok || time.Now().After(g.expires) {
		http.Error(w, "no such grant, or expired", http.StatusNotFound)
		return
	}
	w.Header().Set("Trailer", TrailerDigest)
	w.Header().Set("Content-Type", "application/x-tar")
	d := newDigestWriter()
	// Large writes: a tar is headers of 512 bytes and bodies in 32 KiB
	// pieces, each a chunk and a syscall unbuffered.
	bw := bufio.NewWriterSize(w, streamBuffer)
	err := s.src.WriteTar(r.Context(), g.key, io.MultiWriter(largeWriter{bw, w}, d))
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// No trailer: the client sees an incomplete stream.
		s.cfg.Logger.Warn("rootfs: stream cut", "snapshot", g.key, "error", err.Error())
		return
	}
	w.Header().Set(TrailerDigest, d.String())
}

// largeWrite is the size from which a write skips the stream's buffer.
const largeWrite = 64 << 10

// largeWriter buffers small writes (a tar's headers, small files) and
// passes large ones (the body of a large file, read a MiB at a time) to w
// once what is buffered is out: the buffer would copy them once more,
// a pass over every byte of a large file for nothing.
type largeWriter struct {
	*bufio.Writer
	w io.Writer
}

func (l largeWriter) Write(p []byte) (int, error) {
	if len(p) < largeWrite {
		return l.Writer.Write(p)
	}
	if err := l.Flush(); err != nil {
		return 0, err
	}
	return l.w.Write(p)
}
