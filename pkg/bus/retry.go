package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// retryOrdinal numbers the retry notices of one input after any progress
// its handler emits, so their derived ids never meet.
const retryOrdinal = 1 << 20

// RetryProgress is the progress event that tells a build's watchers that
// in failed with err on delivery attempt delivered of maxDeliver and is
// tried again after delay: a finished status line of the input's source
// with the reason and the attempt. ok is false for an input with no build.
func RetryProgress(in events.Event, err error, delivered, maxDeliver int, delay time.Duration, source string, now time.Time) (ev events.Event, ok bool) {
	if in.BuildID == "" {
		return events.Event{}, false
	}
	vertex := ""
	if src, found := events.SourceOf(in.Data); found {
		vertex = src.Identifier
	}
	reason := err.Error()
	if len(reason) > 256 {
		reason = reason[:256] + "…"
	}
	at := now.UTC()
	p := events.Progress{
		Vertex:    vertex,
		ID:        fmt.Sprintf("retrying %s in %s (attempt %d of %d failed: %s)", events.NameOf(in.Type()), delay.Round(time.Millisecond), delivered, maxDeliver, reason),
		Action:    "retrying",
		Started:   &at,
		Completed: &at,
	}
	return events.Derive(in, events.New(p), retryOrdinal+delivered, source, now), true
}

// announceRetry publishes RetryProgress for in; a failure to publish it
// only loses the notice.
func (w *Worker) announceRetry(ctx context.Context, in events.Event, err error, delivered int, delay time.Duration) {
	ev, ok := RetryProgress(in, err, delivered, w.cfg.Consumer.MaxDeliver, delay, w.cfg.Source, time.Now())
	if !ok {
		return
	}
	if perr := w.pub.PublishAll(ctx, []events.Event{ev}); perr != nil {
		w.cfg.Logger.Warn("publishing the retry notice failed", "event_id", in.ID, "error", perr)
	}
}
