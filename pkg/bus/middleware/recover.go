package middleware

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Recover turns a panic in a handler into an unclassified error, so the
// message is retried and, if it keeps panicking, given up on and
// dead-lettered, instead of crashing the service. The panic and its stack
// are logged.
func Recover(log *slog.Logger) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, in events.Event) (out []events.Event, err error) {
			defer func() {
				if r := recover(); r != nil {
					log.ErrorContext(ctx, "handler panicked", "build_id", in.BuildID, "event_type", string(in.Type()),
						"event_id", in.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					out, err = nil, fmt.Errorf("handler panicked: %v", r)
				}
			}()
			return next(ctx, in)
		}
	}
}
