package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Config is what a session serves.
type Config struct {
	// Builds are the builds the session serves: the fleet sends, with
	// every request, the build it reads for (HeaderBuild), and a request
	// for another build, or for none, is answered as if the session were
	// gone, so a client that learns the session's id and starts a build
	// naming it reads nothing. Nil
	// serves every build (a session a test serves for anything); the
	// CLI's sessions always name theirs.
	Builds []string
	// Protocols are the protocols the session serves: its OCI layouts
	// (store.NewServer), its local directories (dirsync.NewServer), its
	// secrets (secret.NewServer), the layouts it lets the fleet write
	// into (output.NewServer; served by its store.Server too, to be read
	// back). An operation none of them answers is not found: a session
	// serves no stores, no secrets and no directories unless it was given
	// them.
	Protocols []Protocol
	// Concurrency is how many requests are answered at once (each holds
	// one chunk in memory). Zero means 8.
	Concurrency int
	// Logger receives the replies that could not be sent. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Key is the session's signing key (NewKey): the session id must be
	// its ID, and every answer is signed with it, so that readers accept
	// the session's answers only. The zero Key signs nothing (an id that
	// is not a key's).
	Key Key
}

func (c *Config) setDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration a session cannot serve with.
func (c Config) Validate() error {
	if c.Concurrency < 0 {
		return errors.New("session: negative concurrency")
	}
	ops := map[string]bool{OpKey: true, OpPing: true}
	for _, p := range c.Protocols {
		if p == nil {
			return errors.New("session: a nil protocol")
		}
		for _, op := range p.Ops() {
			if ops[op] {
				return fmt.Errorf("session: operation %q is answered twice", op)
			}
			ops[op] = true
		}
	}
	return nil
}

// flushTimeout bounds Serve's wait for the NATS server to confirm the
// subscription.
const flushTimeout = 10 * time.Second

// drainTimeout bounds Stop's wait for the requests already routed to the
// session to be answered.
const drainTimeout = 10 * time.Second

// Server is one serving session. It answers until its Serve ctx is done or
// Stop is called.
type Server struct {
	id   string
	nc   *nats.Conn
	cfg  Config
	sub  *nats.Subscription
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	stop bool
	// stopped is closed by the first Stop.
	stopped chan struct{}
	once    sync.Once
	err     error
	// protocols are Config.Protocols by operation.
	protocols map[string]Protocol
	// builds are the builds served (Config.Builds); nil serves
	// every build. Guarded by mu.
	builds map[string]bool
}

// Serve starts serving cfg as session id on nc and returns once the NATS
// server has the subscription, so a build submitted afterwards finds the
// session. It serves until ctx is done or Stop is called. While a keyed
// session serves, SignRequest signs with its key the requests this
// process publishes naming it.
//
// Errors: failure.ErrInvalid for a malformed id; the configuration's; NATS's
// (subscribing, flushing); the cause of ctx's end while flushing.
func Serve(ctx context.Context, nc *nats.Conn, id string, cfg Config) (*Server, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if cfg.Key.kp != nil && cfg.Key.ID != id {
		return nil, errorf(CodeInvalid, fmt.Sprintf("session %s: the key given is that of session %s", id, cfg.Key.ID))
	}
	if cfg.Key.kp == nil && IsKeyID(id) {
		return nil, errorf(CodeInvalid, fmt.Sprintf("session %s: the id is a session key's, and its key was not given", id))
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{id: id, nc: nc, cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), stopped: make(chan struct{})}
	if cfg.Builds != nil {
		s.builds = map[string]bool{}
		for _, b := range cfg.Builds {
			s.builds[b] = true
		}
	}
	s.protocols = map[string]Protocol{}
	for _, p := range cfg.Protocols {
		for _, op := range p.Ops() {
			s.protocols[op] = p
		}
	}
	// Replies are read from the layouts with a ctx that outlives Serve's
	// end only until Stop has waited for them.
	readCtx := context.WithoutCancel(ctx)
	sub, err := nc.Subscribe(Filter(id), func(m *nats.Msg) { s.dispatch(readCtx, m) })
	if err != nil {
		return nil, fmt.Errorf("serve session %s: %w", id, err)
	}
	s.sub = sub
	fctx, cancel := context.WithTimeoutCause(ctx, flushTimeout, fmt.Errorf("the NATS server did not confirm the subscription within %s", flushTimeout))
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("serve session %s: %w", id, err)
	}
	if cfg.Key.kp != nil {
		held.Store(id, cfg.Key)
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Stop()
		case <-s.stopped:
		}
	}()
	return s, nil
}

// ID is the session's id.
func (s *Server) ID() string { return s.id }

// serves reports whether the session answers a request for build.
func (s *Server) serves(build string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.builds == nil || s.builds[build]
}

// Stop stops serving: it drains the subscription (the NATS server stops
// routing requests to it, and those already routed are answered), so that
// later readers get no responders and fail with *NoSessionError at once,
// and waits for the replies in flight. It may be called more than once.
//
// Errors: NATS's, draining (the first call's, every time).
func (s *Server) Stop() error {
	s.once.Do(func() {
		closed := s.sub.StatusChanged(nats.SubscriptionClosed)
		err := s.sub.Drain()
		if err == nil {
			select {
			case <-closed:
			case <-time.After(drainTimeout):
				err = s.sub.Unsubscribe()
			}
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			err = nil // a closed connection serves nothing either
		}
		s.err = err
		held.Delete(s.id)
		s.mu.Lock()
		s.stop = true
		s.mu.Unlock()
		s.wg.Wait()
		close(s.stopped)
	})
	return s.err
}

// dispatch answers m on a goroutine of its own, at most Concurrency at a
// time; it runs on the subscription's goroutine, which waits for a free
// slot (NATS buffers the requests meanwhile).
func (s *Server) dispatch(ctx context.Context, m *nats.Msg) {
	s.sem <- struct{}{}
	s.mu.Lock()
	if s.stop {
		s.mu.Unlock()
		<-s.sem
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		reply := s.answer(ctx, m)
		if m.Reply == "" {
			return
		}
		reply.Subject = m.Reply
		if s.cfg.Key.kp != nil {
			if err := s.cfg.Key.sign(m, reply); err != nil {
				s.cfg.Logger.Warn("session reply not signed", "session", s.id, "error", err.Error())
				return
			}
		}
		if err := s.nc.PublishMsg(reply); err != nil {
			s.cfg.Logger.Warn("session reply not sent", "session", s.id, "error", err.Error())
		}
	}()
}

// answer computes the reply to one request.
func (s *Server) answer(ctx context.Context, m *nats.Msg) *nats.Msg {
	op := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if build := m.Header.Get(HeaderBuild); !s.serves(build) {
		// As if the session were gone: it serves its own builds only.
		return errorReply(errorf(CodeNoSession, fmt.Sprintf("session %s serves no build %q", s.id, build)))
	}
	data := m.Data
	if s.cfg.Key.kp != nil {
		if op == OpKey {
			return s.cfg.Key.KeyAnswer()
		}
		var err error
		if data, err = s.cfg.Key.OpenRequest(m); err != nil {
			return errorReply(err)
		}
	}
	if p, ok := s.protocols[op]; ok {
		return p.Answer(ctx, Request{Session: s.id, Op: op, Data: data, Limit: s.chunkLimit()})
	}
	if op == OpPing {
		return sizeReply(0, nil)
	}
	return errorReply(errorf(CodeNotFound, fmt.Sprintf("session %s serves no operation %q", s.id, op)))
}

// chunkLimit is MaxChunkSize, or less when the NATS server's payload
// limit is lower.
func (s *Server) chunkLimit() int64 {
	limit := int64(MaxChunkSize)
	if mp := s.nc.MaxPayload(); mp > 0 && mp-4096 < limit {
		limit = max(mp-4096, 1)
	}
	return limit
}

// SizeReply is a reply of body data and HeaderSize size.
func SizeReply(size int64, data []byte) *nats.Msg {
	return &nats.Msg{Header: nats.Header{HeaderSize: []string{strconv.FormatInt(size, 10)}}, Data: data}
}

// ErrorReply is the error reply carrying err: its code (CodeOf) in
// HeaderError, its text as the body.
func ErrorReply(err error) *nats.Msg {
	return &nats.Msg{Header: nats.Header{HeaderError: []string{CodeOf(err)}}, Data: []byte(err.Error())}
}

func errorReply(err error) *nats.Msg { return ErrorReply(err) }

func sizeReply(size int64, data []byte) *nats.Msg { return SizeReply(size, data) }
