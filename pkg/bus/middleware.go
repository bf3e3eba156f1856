package bus

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Recover turns a panic in a handler into an error (unclassified, so the
// message is retried and, if it keeps panicking, dead-lettered) instead of a
// crashed service.
func Recover(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, in events.Event) (out []events.Event, err error) {
			defer func() {
				if r := recover(); r != nil {
					log.ErrorContext(ctx, "handler panicked", "event_id", in.ID, "build_id", in.BuildID,
						"event_type", string(in.Type()), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					out, err = nil, fmt.Errorf("handler panicked: %v", r)
				}
			}()
			return next(ctx, in)
		}
	}
}

// Logging logs every handled event at debug level and every failure at
// warn level, with the build id, event type and event id.
func Logging(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, in events.Event) ([]events.Event, error) {
			start := time.Now()
			out, err := next(ctx, in)
			attrs := []any{"build_id", in.BuildID, "event_type", string(in.Type()), "event_id", in.ID,
				"outputs", len(out), "duration", time.Since(start)}
			if err != nil {
				log.WarnContext(ctx, "handler failed", append(attrs, "error", err.Error(), "code", Code(err))...)
			} else {
				log.DebugContext(ctx, "handled", attrs...)
			}
			return out, err
		}
	}
}
