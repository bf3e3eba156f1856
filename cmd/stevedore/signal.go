package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// interrupted is the cause of a command's context when a signal stopped
// it.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string { return fmt.Sprintf("interrupted (%s)", i.sig) }

// exitCode is what a shell expects of a command a signal stopped: 128
// plus the signal's number (130 for Ctrl-C).
func (i interrupted) exitCode() int { return 128 + int(i.sig) }

// signalContext is cancelled with an interrupted cause at the first
// SIGINT or SIGTERM; a second signal then has its default effect.
func signalContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			sig, _ := s.(syscall.Signal)
			cancel(interrupted{sig: sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel(nil)
	}
}
