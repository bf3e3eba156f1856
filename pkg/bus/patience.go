package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStartTimeout is how long a replica waits by default, at start,
// for a JetStream that does not answer yet (see Patient).
const DefaultStartTimeout = 3 * time.Minute

// Patience is how a replica waits, at start, for a JetStream cluster that
// is busy, electing a leader or not yet up.
type Patience struct {
	// Until is when the waiting ends: a transient failure after it is
	// returned as it is. The zero time waits no more.
	Until time.Time
	// Attempt bounds one call's wait for an answer; zero means
	// DefaultAttemptTimeout.
	Attempt time.Duration
	// Logger receives a warning for each retry; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultAttemptTimeout is how long one call waits for JetStream's answer
// before Patient tries it again.
const DefaultAttemptTimeout = 10 * time.Second

// Patient returns js whose lookups and creates of streams, consumers and
// key-value buckets try again, with backoff, while JetStream's answer is
// transient (no answer in time, no responders, JetStream not enabled or
// temporarily unavailable, no leader, no peers to place on) and p.Until
// has not passed; the call's ctx ends the waiting too. Any other error
// (a missing or differently configured bucket, a permission refused) is
// returned at once. Everything else js does, publishing included, is
// untouched. A replica uses it for what it sets up at start, so that a
// cluster that is loaded or between leaders delays it instead of
// stopping it. A js that is patient already is returned as it is, with
// its own patience.
func Patient(js jetstream.JetStream, p Patience) jetstream.JetStream {
	if _, ok := js.(*patientJS); ok {
		return js
	}
	if p.Attempt <= 0 {
		p.Attempt = DefaultAttemptTimeout
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	return &patientJS{JetStream: js, p: p}
}

type patientJS struct {
	jetstream.JetStream
	p Patience
}

// Transient reports whether a JetStream API call's error says the cluster
// could not answer now (and may later) rather than that the request is
// wrong: a timeout, no responders, JetStream not enabled or temporarily
// unavailable, no leader, no peers to place a replica on.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jsClusterNotAvail, jsClusterNotLeader, jsClusterNotAssigned, jsClusterNoPeers, jsClusterIncomplete,
			jetstream.JSErrCodeJetStreamNotEnabled:
			return true
		}
	}
	return false
}

// JetStream API error codes of a cluster that cannot answer now.
const (
	jsClusterIncomplete  jetstream.ErrorCode = 10004 // incomplete results
	jsClusterNoPeers     jetstream.ErrorCode = 10005 // no suitable peers for placement
	jsClusterNotAssigned jetstream.ErrorCode = 10007 // cluster not assigned to this server
	jsClusterNotAvail    jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	jsClusterNotLeader   jetstream.ErrorCode = 10009 // cluster can not handle request
)

// try calls f until it succeeds, fails for good, ctx ends or the patience
// runs out. what names the call in the log and the final error.
func try[T any](ctx context.Context, p Patience, what string, f func(context.Context) (T, error)) (T, error) {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeoutCause(ctx, p.Attempt, fmt.Errorf("%s: no answer within %s", what, p.Attempt))
		v, err := f(actx)
		cancel()
		if err == nil || !Transient(err) {
			return v, err
		}
		if context.Cause(ctx) != nil {
			return v, fmt.Errorf("%w (stopped waiting: %w)", err, context.Cause(ctx))
		}
		if !time.Now().Add(delay).Before(p.Until) {
			if attempt > 1 {
				return v, fmt.Errorf("%w (JetStream still not ready after %d attempts)", err, attempt)
			}
			return v, err
		}
		p.Logger.Warn("JetStream not ready; trying again", "call", what, "attempt", attempt, "in", delay, "error", err.Error())
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("%w (stopped waiting: %w)", err, context.Cause(ctx))
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (j *patientJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	return try(ctx, j.p, "stream "+name, func(ctx context.Context) (jetstream.Stream, error) { return j.JetStream.Stream(ctx, name) })
}

func (j *patientJS) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return try(ctx, j.p, "create stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) { return j.JetStream.CreateStream(ctx, cfg) })
}

func (j *patientJS) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return try(ctx, j.p, "update stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) { return j.JetStream.UpdateStream(ctx, cfg) })
}

func (j *patientJS) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return try(ctx, j.p, "provision stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return j.JetStream.CreateOrUpdateStream(ctx, cfg)
	})
}

func (j *patientJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	return try(ctx, j.p, "consumer "+name+" of "+stream, func(ctx context.Context) (jetstream.Consumer, error) {
		return j.JetStream.Consumer(ctx, stream, name)
	})
}

func (j *patientJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return try(ctx, j.p, "create consumer "+cfg.Durable+" of "+stream, func(ctx context.Context) (jetstream.Consumer, error) {
		return j.JetStream.CreateConsumer(ctx, stream, cfg)
	})
}

func (j *patientJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return try(ctx, j.p, "update consumer "+cfg.Durable+" of "+stream, func(ctx context.Context) (jetstream.Consumer, error) {
		return j.JetStream.UpdateConsumer(ctx, stream, cfg)
	})
}

func (j *patientJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return try(ctx, j.p, "provision consumer "+cfg.Durable+" of "+stream, func(ctx context.Context) (jetstream.Consumer, error) {
		return j.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
	})
}

func (j *patientJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	return try(ctx, j.p, "bucket "+bucket, func(ctx context.Context) (jetstream.KeyValue, error) { return j.JetStream.KeyValue(ctx, bucket) })
}

func (j *patientJS) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return try(ctx, j.p, "create bucket "+cfg.Bucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return j.JetStream.CreateKeyValue(ctx, cfg)
	})
}

func (j *patientJS) UpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return try(ctx, j.p, "update bucket "+cfg.Bucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return j.JetStream.UpdateKeyValue(ctx, cfg)
	})
}

func (j *patientJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return try(ctx, j.p, "provision bucket "+cfg.Bucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	})
}
