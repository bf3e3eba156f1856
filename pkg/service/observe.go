package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// The HTTP paths a service binary serves.
const (
	// PathMetrics serves Prometheus metrics.
	PathMetrics = "/metrics"
	// PathHealthz answers 200 when the replica is ready (connected to
	// JetStream, its consumer bound), 503 with the reasons otherwise.
	PathHealthz = "/healthz"
)

// Health is a replica's readiness: a set of named checks, each failing
// until it is first set, plus the NATS connection when one is attached.
// It is safe for concurrent use.
type Health struct {
	mu     sync.Mutex
	checks map[string]error
	nc     *nats.Conn
}

// NewHealth returns a Health whose checks start failing with "not yet".
func NewHealth(checks ...string) *Health {
	h := &Health{checks: map[string]error{}}
	for _, c := range checks {
		h.checks[c] = errors.New("not yet")
	}
	return h
}

// Set records the result of check: nil for passing.
func (h *Health) Set(check string, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.checks[check] = err
	h.mu.Unlock()
}

// attach makes the NATS connection part of readiness.
func (h *Health) attach(nc *nats.Conn) {
	h.mu.Lock()
	h.nc = nc
	h.mu.Unlock()
}

// Err is nil when every check passes, otherwise the failures.
func (h *Health) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var msgs []string
	if h.nc != nil && !h.nc.IsConnected() {
		msgs = append(msgs, "nats: "+h.nc.Status().String())
	}
	for name, err := range h.checks {
		if err != nil {
			msgs = append(msgs, name+": "+err.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	sort.Strings(msgs)
	return errors.New(strings.Join(msgs, "; "))
}

// ServeHTTP answers 200 "ok" when ready, 503 with the failures otherwise.
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if err := h.Err(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// The check Run sets: the service's consumer is bound.
const checkConsumer = "consumer"

// Observe is what a binary gives its service for observability: where to
// register metrics and where to report readiness. Its zero value turns
// both off.
type Observe struct {
	// Metrics registers the service's metrics; nil for none.
	Metrics prometheus.Registerer
	// Health receives the service's readiness; nil for none.
	Health *Health
}

// lagInterval is how often Run samples its consumer's state.
const lagInterval = 5 * time.Second

// consumerLag exports a consumer's backlog as gauges
// (stevedore_<service>_consumer_pending_messages,
// _ack_pending_messages, _redelivered_messages) and keeps the consumer
// check of health current, until ctx ends.
func consumerLag(ctx context.Context, js jetstream.JetStream, component, consumer string, obs Observe, log *slog.Logger) error {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: fmt.Sprintf("stevedore_%s_consumer_%s", component, name), Help: help,
			ConstLabels: prometheus.Labels{"consumer": consumer}})
	}
	pending := gauge("pending_messages", "Messages of the consumer not yet delivered: the fleet's backlog.")
	ackPending := gauge("ack_pending_messages", "Messages delivered and not yet acknowledged: work in flight.")
	redelivered := gauge("redelivered_messages", "Messages delivered more than once and not yet acknowledged.")
	if obs.Metrics != nil {
		for _, g := range []prometheus.Collector{pending, ackPending, redelivered} {
			if err := obs.Metrics.Register(g); err != nil {
				return fmt.Errorf("metrics: %w", err)
			}
		}
	}
	sample := func() {
		c, err := js.Consumer(ctx, events.StreamEvents, consumer)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = c.Info(ctx); err == nil {
				pending.Set(float64(info.NumPending))
				ackPending.Set(float64(info.NumAckPending))
				redelivered.Set(float64(info.NumRedelivered))
			}
		}
		if err != nil && context.Cause(ctx) == nil {
			log.Debug("consumer state unavailable", "consumer", consumer, "error", err.Error())
		}
		obs.Health.Set(checkConsumer, err)
	}
	sample()
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			sample()
		}
	}
}

// serveHTTP serves /metrics and /healthz on addr until ctx ends.
func serveHTTP(ctx context.Context, addr string, reg *prometheus.Registry, health *Health) (func() error, error) {
	mux := http.NewServeMux()
	mux.Handle(PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle(PathHealthz, health)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() error {
		sctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), 5*time.Second, errors.New("http shutdown took over 5s"))
		defer cancel()
		return srv.Shutdown(sctx)
	}, nil
}

// newRegistry is a binary's metrics registry: Go runtime and process
// metrics, plus what the service registers.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Healthcheck GETs the /healthz of a binary listening on addr (":8080" is
// asked on 127.0.0.1) and returns the process exit code: 0 when ready. It
// is what a container healthcheck runs, since a FROM scratch image has no
// curl.
func Healthcheck(ctx context.Context, addr string) int {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 2
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeoutCause(ctx, 3*time.Second, errors.New("healthcheck timed out"))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+PathHealthz, nil)
	if err != nil {
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 1
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
