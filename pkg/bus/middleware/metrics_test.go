package middleware_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stevedore-dev/stevedore/pkg/bus/middleware"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	mw, err := middleware.Metrics(reg, "puller")
	if err != nil {
		t.Fatal(err)
	}
	ok := mw(func(context.Context, events.Event) ([]events.Event, error) { return nil, nil })
	bad := mw(func(context.Context, events.Event) ([]events.Event, error) {
		return nil, failure.Invalid(errors.New("no handler for git"))
	})
	for range 3 {
		_, _ = ok(t.Context(), in)
	}
	_, _ = bad(t.Context(), in)
	want := `
# HELP stevedore_puller_events_handled_total Events handled, by event type and outcome (ok or the failure code).
# TYPE stevedore_puller_events_handled_total counter
stevedore_puller_events_handled_total{event_type="cachekey.requested",outcome="invalid"} 1
stevedore_puller_events_handled_total{event_type="cachekey.requested",outcome="ok"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "stevedore_puller_events_handled_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "stevedore_puller_handler_duration_seconds"); n != 1 {
		t.Errorf("%d duration series, want 1 (one event type)", n)
	}
	if _, err := middleware.Metrics(reg, "puller"); err == nil {
		t.Error("registering the same metrics twice succeeded")
	}
}
