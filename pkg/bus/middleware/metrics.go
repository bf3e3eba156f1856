package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// OutcomeOK is the outcome label of a handling that succeeded; a failure's
// is its failure.Code ("invalid", "not-found", "unauthorized", "unavailable",
// "internal").
const OutcomeOK = "ok"

// Metrics counts the events a service handles and times its handlers:
//
//	stevedore_<service>_events_handled_total{event_type, outcome}
//	stevedore_<service>_handler_duration_seconds{event_type}
//
// event_type is the event's short name (cachekey.requested), outcome
// OutcomeOK or the failure's code: the labels are bounded. It fails when
// the metrics are already registered with reg.
func Metrics(reg prometheus.Registerer, service string) (bus.Middleware, error) {
	handled := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: fmt.Sprintf("stevedore_%s_events_handled_total", service),
		Help: "Events handled, by event type and outcome (ok or the failure code).",
	}, []string{"event_type", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    fmt.Sprintf("stevedore_%s_handler_duration_seconds", service),
		Help:    "Time spent in the handler, by event type.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5ms … 131s
	}, []string{"event_type"})
	for _, c := range []prometheus.Collector{handled, duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, in events.Event) ([]events.Event, error) {
			start := time.Now()
			out, err := next(ctx, in)
			name := events.NameOf(in.Type())
			outcome := OutcomeOK
			if err != nil {
				outcome = failure.Code(err)
			}
			handled.WithLabelValues(name, outcome).Inc()
			duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
			return out, err
		}
	}, nil
}
