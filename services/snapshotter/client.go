package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/session"
)

// Clients tells whether a build's client is still there: its session
// answers.
type Clients interface {
	// Ping returns *session.NoSessionError (session.ErrNoSession) when
	// session id is gone or no longer serves the build being handled.
	Ping(ctx context.Context, id string) error
}

var _ Clients = (*session.Client)(nil)

// watchClient returns a ctx that ends, with a permanent not-found cause,
// once the build's client session (id) stops answering: the client
// cancelled or went away, and nobody waits for the work. stop ends the
// watch. Without a session, or without checks, ctx is returned as is.
func (h *Handler) watchClient(ctx context.Context, id string) (context.Context, func()) {
	if id == "" || h.clients == nil || h.clientCheck <= 0 {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(h.clientCheck)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := h.clients.Ping(ctx, id); errors.Is(err, session.ErrNoSession) {
				cancel(failure.NotFound(fmt.Errorf("the build's client went away: %w", err)))
				return
			}
		}
	}()
	return ctx, func() {
		close(done)
		cancel(errors.New("snapshot over"))
	}
}
