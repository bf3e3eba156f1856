package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Logging logs every failed handling at warn level (with the error and its
// code) and every success at debug level, each with the build id, event
// type, event id, output count and duration.
func Logging(log *slog.Logger) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, in events.Event) ([]events.Event, error) {
			start := time.Now()
			out, err := next(ctx, in)
			if err == nil && !log.Enabled(ctx, slog.LevelDebug) {
				return out, nil
			}
			attrs := []any{"build_id", in.BuildID, "event_type", string(in.Type()), "event_id", in.ID,
				"outputs", len(out), "duration", time.Since(start)}
			if err != nil {
				log.WarnContext(ctx, "handler failed", append(attrs, "error", err.Error(), "code", failure.Code(err))...)
			} else {
				log.DebugContext(ctx, "handled", attrs...)
			}
			return out, err
		}
	}
}
