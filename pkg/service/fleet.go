package service

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Runner is a started service replica: it runs until ctx ends. A Runner
// that is also an io.Closer is closed when its fleet is (after it has
// stopped).
type Runner interface {
	Run(ctx context.Context) error
}

// Member is one service of a fleet: the name its connection goes by and
// how it starts on that connection. Each service gives its own
// (resolver.Def.Member and the like, made by Def.Member or NewMember).
type Member struct {
	// Name names the member's connection ("stevedore-puller") and the
	// member in Fleet.Runner and errors.
	Name string
	// Start opens what the service needs and returns it ready to run; s
	// are the fleet's settings, which fill what the member's own config
	// leaves zero.
	Start func(ctx context.Context, js jetstream.JetStream, s Settings) (Runner, error)
}

// MemberName is the name of a service's member (its connection):
// "stevedore-" and the component.
func MemberName(component string) string { return "stevedore-" + component }

// Dial opens the connection a member runs on; the fleet closes it (a
// nil *nats.Conn: one the caller closes).
type Dial func(name string) (*nats.Conn, jetstream.JetStream, error)

// Fleet is members started each on its own connection and running.
type Fleet struct {
	names   []string
	runners []Runner
	conns   []*nats.Conn
	cancel  context.CancelCauseFunc
	group   *errgroup.Group
	stopped bool
	closed  bool
	err     error
}

// StartFleet assembles a fleet: it dials a connection for each member in
// order (s.Dial), starts the member on it with the fleet's settings s and,
// once every member has started, runs them all until Stop or Close (ctx
// only bounds the starting). When a member fails to start, those started
// are closed and the error returned. The embedded stack of stevedore up,
// the test fleet and each service binary (a fleet of one, Main) are
// assembled by it.
func StartFleet(ctx context.Context, s Settings, members ...Member) (*Fleet, error) {
	if s.Dial == nil {
		return nil, errors.New("service: a fleet needs a Dial")
	}
	f := &Fleet{}
	for _, m := range members {
		nc, js, err := s.Dial(m.Name)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		f.conns = append(f.conns, nc)
		r, err := m.Start(ctx, js, s)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		f.names = append(f.names, m.Name)
		f.runners = append(f.runners, r)
	}
	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	f.cancel = cancel
	f.group, runCtx = errgroup.WithContext(runCtx)
	for _, r := range f.runners {
		f.group.Go(func() error { return r.Run(runCtx) })
	}
	return f, nil
}

// Runner is the started member named name, nil when there is none.
func (f *Fleet) Runner(name string) Runner {
	for i, n := range f.names {
		if n == name {
			return f.runners[i]
		}
	}
	return nil
}

// Wait blocks until a member stops (with its error) or ctx is done (nil).
func (f *Fleet) Wait(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- f.group.Wait() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

// Stop stops every member and waits for them; it returns the first error
// one of them stopped with. The members stay open (Close closes them).
func (f *Fleet) Stop() error {
	if f.cancel == nil || f.stopped {
		return f.err
	}
	f.stopped = true
	f.cancel(errors.New("fleet stopped"))
	f.err = f.group.Wait()
	return f.err
}

// Close stops the members, closes those that are io.Closers (the last
// started first) and then the connections; it returns Stop's error.
func (f *Fleet) Close() error {
	err := f.Stop()
	if f.closed {
		return err
	}
	f.closed = true
	for i := len(f.runners) - 1; i >= 0; i-- {
		if c, ok := f.runners[i].(io.Closer); ok {
			_ = c.Close()
		}
	}
	for _, nc := range f.conns {
		if nc != nil {
			nc.Close()
		}
	}
	return err
}
