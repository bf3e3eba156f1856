package bus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/bus/middleware"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConsumer is the puller's consumer with test-sized timings: three
// deliveries, and an AckWait no loaded machine's scheduling outlasts, so
// that a count of handler calls says what the worker did, not what the
// server redelivered while the test was starved.
func testConsumer() bus.Consumer {
	c := bus.PullerConsumer()
	c.AckWait = 10 * time.Second
	c.MaxDeliver = 3
	return c
}

// redeliveringConsumer is testConsumer with a short AckWait, for the tests
// of what happens when it runs out.
func redeliveringConsumer() bus.Consumer {
	c := testConsumer()
	c.AckWait = 800 * time.Millisecond
	return c
}

func startEnv(t *testing.T) *bustest.Env {
	t.Helper()
	return startEnvWith(t, testConsumer())
}

func startEnvWith(t *testing.T, c bus.Consumer) *bustest.Env {
	t.Helper()
	return bustest.Start(t, bus.Topology{Consumers: []bus.Consumer{c, bus.ResolverConsumer()}})
}

// runWorker starts a worker on its own connection with handler h and
// returns a function that stops it and waits for it.
func runWorker(t *testing.T, env *bustest.Env, name string, h bus.Handler) (stop func(), nc *nats.Conn) {
	t.Helper()
	return runWorkerWith(t, env, name, testConsumer(), h)
}

func runWorkerWith(t *testing.T, env *bustest.Env, name string, c bus.Consumer, h bus.Handler) (stop func(), nc *nats.Conn) {
	t.Helper()
	return runWorkerConfig(t, env, name, bus.WorkerConfig{Consumer: c}, h)
}

// runWorkerConfig is runWorkerWith with cfg's Consumer and StopGrace.
func runWorkerConfig(t *testing.T, env *bustest.Env, name string, cfg bus.WorkerConfig, h bus.Handler) (stop func(), nc *nats.Conn) {
	t.Helper()
	nc, js := env.Connect(t, name)
	w, err := bus.NewWorker(js, bus.WorkerConfig{
		Consumer:    cfg.Consumer,
		Source:      "/stevedore/test/" + name,
		Concurrency: 2,
		Backoff:     bus.ExponentialBackoff(20*time.Millisecond, 100*time.Millisecond),
		Logger:      quiet,
		Middleware:  []bus.Middleware{middleware.Recover(quiet)},
		StopGrace:   cfg.StopGrace,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle(events.TypeCacheKeyRequested, h)
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel(errors.New("test done"))
			if err := <-done; err != nil {
				t.Errorf("worker %s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, nc
}

var request = events.CacheKeyRequested{Source: events.SourceOp{Identifier: "docker-image://example.com/a:1"}}

func hitFor(in events.CacheKeyRequested) events.Event {
	return events.New(events.CacheHit{Source: in.Source, Key: events.CacheKey{Key: "k"}})
}

func TestWorkerPublishesDerivedOutputsThenAcks(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		calls.Add(1)
		if env, ok := bus.Input(ctx); !ok || env.BuildID != "b1" {
			t.Errorf("Input(ctx) = %+v, %v", env, ok)
		}
		return []events.Event{
			events.New(events.Progress{ID: "one"}),
			events.New(events.Progress{ID: "two"}),
			hitFor(in),
		}, nil
	}))
	rec := env.Record(t, "b1")
	req := env.Request(t, "b1", request)
	hit := rec.Wait(t, 5*time.Second, events.TypeCacheHit)

	if hit.ID != events.DeriveID(bus.Cause(req.ID, storedSeq(t, env, req)), events.TypeCacheHit, 0) || hit.CausationID != req.ID || hit.Source != "/stevedore/test/w1" {
		t.Errorf("hit envelope = %+v", hit)
	}
	progress := rec.OfType(events.TypeProgress)
	if len(progress) != 2 || progress[0].ID == progress[1].ID {
		t.Fatalf("progress events = %+v", progress)
	}
	waitAcked(t, env, events.ConsumerPuller)
	if calls.Load() != 1 {
		t.Errorf("handler called %d times, want 1", calls.Load())
	}
}

// waitAcked waits until the consumer has nothing pending or in flight.
func waitAcked(t *testing.T, env *bustest.Env, consumer string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := consumerInfo(t, env, consumer)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: %d pending, %d unacked", consumer, info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func consumerInfo(t *testing.T, env *bustest.Env, name string) (*jetstream.ConsumerInfo, error) {
	c, err := env.JS.Consumer(t.Context(), events.StreamEvents, name)
	if err != nil {
		return nil, err
	}
	return c.Info(t.Context())
}

func TestWorkerRetriesRetryableErrors(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		if calls.Add(1) < 3 {
			return nil, failure.Unavailable(errors.New("registry returned 503"))
		}
		return []events.Event{hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	rec.Wait(t, 5*time.Second, events.TypeCacheHit)
	if got := calls.Load(); got != 3 {
		t.Errorf("handler called %d times, want 3", got)
	}
	if f := rec.OfType(events.TypeSourceFailed); len(f) != 0 {
		t.Errorf("unexpected failure: %v", bustest.Summary(f))
	}
}

func TestWorkerFailsPermanentErrorsOnceAndDeadLetters(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	runDLQ(t, env)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		calls.Add(1)
		return nil, failure.Invalid(errors.New("invalid layer limit 0"))
	}))
	rec := env.Record(t, "b1")
	req := env.Request(t, "b1", request)
	ev := rec.Wait(t, 5*time.Second, events.TypeSourceFailed)
	f := ev.Data.(events.SourceFailed)
	if f.Reason != "invalid layer limit 0" || f.Code != "invalid" || f.Step != events.TypeCacheKeyRequested ||
		f.Source.Identifier != request.Source.Identifier || f.Attempts != 1 {
		t.Errorf("failed event = %+v", f)
	}
	if ev.ID != events.DeriveID(bus.Cause(req.ID, storedSeq(t, env, req)), events.TypeSourceFailed, 0) {
		t.Errorf("failed event id %s is not derived from the request", ev.ID)
	}
	dl := waitDeadLetter(t, env, events.ConsumerPuller)
	if got := dl.Header.Get(bus.HeaderDLQReason); got != "invalid layer limit 0" {
		t.Errorf("dead letter reason = %q", got)
	}
	if got := dl.Header.Get(bus.HeaderDLQSubject); got != events.Subject("b1", events.TypeCacheKeyRequested) {
		t.Errorf("dead letter subject header = %q", got)
	}
	waitAcked(t, env, events.ConsumerPuller)
	if calls.Load() != 1 {
		t.Errorf("a permanent error was retried: %d calls", calls.Load())
	}
}

func TestWorkerGivesUpAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	runDLQ(t, env)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		calls.Add(1)
		return nil, errors.New("connection refused")
	}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	f := rec.Wait(t, 5*time.Second, events.TypeSourceFailed).Data.(events.SourceFailed)
	if !strings.Contains(f.Reason, "giving up after 3 attempts: connection refused") || f.Code != "internal" || f.Attempts != 3 {
		t.Errorf("failed event = %+v", f)
	}
	waitDeadLetter(t, env, events.ConsumerPuller)
	if calls.Load() != 3 {
		t.Errorf("handler called %d times, want MaxDeliver = 3", calls.Load())
	}
}

func TestWorkerPoisonMessage(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	runDLQ(t, env)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		calls.Add(1)
		return []events.Event{hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	// A malformed payload on the consumer's subject, then a good request:
	// the poison is failed and dead-lettered, the good one is served.
	poison := nats.NewMsg(events.Subject("b1", events.TypeCacheKeyRequested))
	poison.Header.Set("ce-specversion", "1.0")
	poison.Header.Set("ce-type", string(events.TypeCacheKeyRequested))
	poison.Header.Set(jetstream.MsgIDHeader, "poison-1")
	poison.Data = []byte("{not json")
	if _, err := env.JS.PublishMsg(t.Context(), poison); err != nil {
		t.Fatal(err)
	}
	env.Request(t, "b1", request)
	rec.Wait(t, 5*time.Second, events.TypeCacheHit)
	f := rec.Wait(t, 5*time.Second, events.TypeSourceFailed)
	if fd := f.Data.(events.SourceFailed); fd.Code != "invalid" || !strings.Contains(fd.Reason, "undecodable event") || fd.Step != events.TypeCacheKeyRequested {
		t.Errorf("poison failure = %+v", fd)
	}
	if f.CausationID != "poison-1" {
		t.Errorf("poison failure caused by %q, want the message id", f.CausationID)
	}
	dl := waitDeadLetter(t, env, events.ConsumerPuller)
	if string(dl.Data) != "{not json" {
		t.Errorf("dead letter body = %q", dl.Data)
	}
	if calls.Load() != 1 {
		t.Errorf("handler called %d times", calls.Load())
	}
}

// A handler that outlives AckWait keeps its message through InProgress
// heartbeats: no redelivery, no second call.
func TestWorkerHeartbeatsLongWork(t *testing.T) {
	t.Parallel()
	// A roomier AckWait than the other tests: heartbeats must arrive in
	// time even on a loaded machine, while the work still outlasts it.
	c := testConsumer()
	c.AckWait = 2 * time.Second
	env := startEnvWith(t, c)
	var first, second atomic.Int32
	holding := make(chan struct{})
	runWorkerWith(t, env, "w1", c, bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		if first.Add(1) == 1 {
			close(holding)
		}
		time.Sleep(5 * c.AckWait / 2)
		return []events.Event{hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	<-holding
	// A second replica that would take the message if it were redelivered.
	runWorkerWith(t, env, "w2", c, bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		second.Add(1)
		return nil, errors.New("w2 must never see this message")
	}))
	rec.Wait(t, 10*time.Second, events.TypeCacheHit)
	if first.Load() != 1 || second.Load() != 0 {
		t.Errorf("handlers called %d and %d times, want 1 and 0", first.Load(), second.Load())
	}
}

// A worker whose connection drops mid-request loses the message to another
// replica after AckWait; events both published are stored once.
func TestWorkerCrashRedeliversAndDedupes(t *testing.T) {
	t.Parallel()
	c := redeliveringConsumer()
	env := startEnvWith(t, c)
	release := make(chan struct{})
	var firstCalls, secondCalls atomic.Int32
	stop1, nc1 := runWorkerWith(t, env, "w1", c, bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		firstCalls.Add(1)
		<-release
		return []events.Event{hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	waitFor(t, func() bool { return firstCalls.Load() == 1 })
	// The replica dies: its connection is gone, its heartbeats stop.
	nc1.Close()
	runWorkerWith(t, env, "w2", c, bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		secondCalls.Add(1)
		return []events.Event{hitFor(in)}, nil
	}))
	rec.Wait(t, 10*time.Second, events.TypeCacheHit)
	close(release)
	stop1()
	if secondCalls.Load() != 1 {
		t.Errorf("second replica called %d times", secondCalls.Load())
	}
	// Publish the same derived output again, as a replica that finished
	// after all would: the stream drops it.
	// The stream has answered the publish when it returns: what it holds
	// is read from it, not from a watcher that may trail.
	hit := rec.OfType(events.TypeCacheHit)[0]
	if err := bus.NewPublisher(env.JS, bus.WithDerivedIDs()).Publish(t.Context(), hit); err != nil {
		t.Fatal(err)
	}
	stored := env.Stored(t, "b1")
	if n := countOf(stored, events.TypeCacheHit); n != 1 {
		t.Errorf("%d cache.hit events stored, want 1: %v", n, bustest.Summary(stored))
	}
}

// A message no worker ever acknowledges (each one crashes) ends in the DLQ
// with a failed event from the mover.
func TestMaxDeliveriesWithoutFailureIsReportedByDLQ(t *testing.T) {
	t.Parallel()
	env := startEnvWith(t, redeliveringConsumer())
	runDLQ(t, env)
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	// Pull the message MaxDeliver times without ever acking it.
	c, err := env.JS.Consumer(t.Context(), events.StreamEvents, events.ConsumerPuller)
	if err != nil {
		t.Fatal(err)
	}
	for range testConsumer().MaxDeliver {
		msgs, err := c.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range msgs.Messages() {
			n++
		}
		if n != 1 {
			t.Fatalf("fetched %d messages", n)
		}
	}
	// The server notices the exhausted message when it next looks for work
	// for a pull request, as it would for any running replica.
	msgs, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		t.Errorf("message delivered after MaxDeliver: %s", m.Subject())
	}
	f := rec.Wait(t, 10*time.Second, events.TypeSourceFailed).Data.(events.SourceFailed)
	if f.Code != "unavailable" || !strings.Contains(f.Reason, "no worker acknowledged it in 3 deliveries") {
		t.Errorf("failed event = %+v", f)
	}
	if got := waitDeadLetter(t, env, events.ConsumerPuller).Header.Get(bus.HeaderDLQDeliveries); got != "3" {
		t.Errorf("dead letter deliveries = %q", got)
	}
}

func TestWorkerRecoversPanics(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return []events.Event{hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	rec.Wait(t, 5*time.Second, events.TypeCacheHit)
	if calls.Load() != 2 {
		t.Errorf("calls = %d, want a retry after the panic", calls.Load())
	}
}

func runDLQ(t *testing.T, env *bustest.Env) {
	t.Helper()
	_, js := env.Connect(t, "dlq")
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.NewDLQ(js, "/stevedore/test/dlq", quiet).Run(ctx) }()
	t.Cleanup(func() {
		cancel(errors.New("test done"))
		if err := <-done; err != nil {
			t.Errorf("dlq: %v", err)
		}
	})
}

func waitDeadLetter(t *testing.T, env *bustest.Env, consumer string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := env.JS.Stream(t.Context(), events.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	var msg *jetstream.RawStreamMsg
	waitFor(t, func() bool {
		msg, err = s.GetLastMsgForSubject(t.Context(), events.DLQSubject(consumer))
		return err == nil
	})
	return msg
}

// countOf counts the events of type typ.
func countOf(es []events.Event, typ events.Type) int {
	n := 0
	for _, e := range es {
		if e.Type() == typ {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAction(t *testing.T) {
	t.Parallel()
	backoff := bus.ExponentialBackoff(time.Second, 5*time.Second)
	for _, tc := range []struct {
		err       error
		delivered int
		want      bus.Verdict
	}{
		{failure.Invalid(errors.New("x")), 1, bus.Verdict{}},
		{failure.NotFound(errors.New("x")), 1, bus.Verdict{}},
		{failure.Unauthorized(errors.New("x")), 1, bus.Verdict{}},
		{failure.Unavailable(errors.New("x")), 1, bus.Verdict{Retry: true, Delay: time.Second}},
		{failure.Unavailable(errors.New("x")), 3, bus.Verdict{Retry: true, Delay: 4 * time.Second}},
		{failure.Conflict(errors.New("x")), 4, bus.Verdict{Retry: true, Delay: 5 * time.Second}},
		{errors.New("unclassified"), 2, bus.Verdict{Retry: true, Delay: 2 * time.Second}},
		{failure.Unavailable(errors.New("x")), 5, bus.Verdict{}},
	} {
		if got := bus.Action(tc.err, tc.delivered, 5, backoff); got != tc.want {
			t.Errorf("Action(%v, %d) = %+v, want %+v", tc.err, tc.delivered, got, tc.want)
		}
	}
}

func TestClassesKeepText(t *testing.T) {
	t.Parallel()
	base := fmt.Errorf("wrapped: %w", io.EOF)
	err := failure.NotFound(base)
	if err.Error() != "wrapped: EOF" || !errors.Is(err, failure.ErrNotFound) || !errors.Is(err, io.EOF) || failure.Code(err) != "not-found" {
		t.Errorf("NotFound(%v) = %v (code %s)", base, err, failure.Code(err))
	}
	if failure.Code(fmt.Errorf("outer: %w", failure.Unauthorized(base))) != "unauthorized" {
		t.Error("class lost through wrapping")
	}
}

func TestEmitPublishesBeforeOutputsWithDerivedIDs(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		for i := range 3 {
			bus.Emit(ctx, events.Progress{ID: fmt.Sprintf("step %d", i)})
		}
		return []events.Event{events.New(events.Progress{ID: "last"}), hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	req := env.Request(t, "b1", request)
	rec.Wait(t, 5*time.Second, events.TypeCacheHit)
	var ids []string
	for _, e := range rec.Events() {
		if p, ok := e.Data.(events.Progress); ok {
			ids = append(ids, p.ID)
			n := len(ids) - 1
			if e.ID != events.DeriveID(bus.Cause(req.ID, storedSeq(t, env, req)), events.TypeProgress, n) {
				t.Errorf("progress %q has id %s, want ordinal %d", p.ID, e.ID, n)
			}
		}
	}
	if strings.Join(ids, ",") != "step 0,step 1,step 2,last" {
		t.Errorf("progress order = %v", ids)
	}
	if last := rec.Events()[len(rec.Events())-1]; last.Type() != events.TypeCacheHit {
		t.Errorf("last event is %s, want the handler's output", last.Type())
	}
	bus.Emit(t.Context(), events.Progress{ID: "outside a handler: ignored"})
}

func TestFailureEventTypeFollowsTheStep(t *testing.T) {
	t.Parallel()
	in := events.Event{ID: "i", BuildID: "b", Data: events.SnapshotRequested{Source: request.Source}}
	f := bus.FailureEvent(in, events.TypeSnapshotRequested, failure.Invalid(errors.New("digest mismatch")), 1, "/s", time.Now())
	sf, ok := f.Data.(events.SnapshotFailed)
	if !ok || sf.Reason != "digest mismatch" || sf.Code != "invalid" || sf.Source.Identifier != request.Source.Identifier {
		t.Errorf("snapshot step failure = %T %+v", f.Data, f.Data)
	}
	f = bus.FailureEvent(in, events.TypeCacheKeyRequested, errors.New("x"), 2, "/s", time.Now())
	if _, ok := f.Data.(events.SourceFailed); !ok {
		t.Errorf("key step failure = %T", f.Data)
	}
}

// A replica that stops while a handler runs gives it StopGrace, then ends
// its ctx (ErrStopping) and hands the message back: another replica takes
// it at once, long before AckWait, and nothing failed.
func TestWorkerStopGraceHandsTheMessageBack(t *testing.T) {
	t.Parallel()
	c := testConsumer()
	c.AckWait = 30 * time.Second // a redelivery after AckWait would time the test out
	env := startEnvWith(t, c)
	started := make(chan struct{})
	causes := make(chan error, 1)
	stopA, _ := runWorkerConfig(t, env, "a", bus.WorkerConfig{Consumer: c, StopGrace: 200 * time.Millisecond},
		bus.Typed(func(ctx context.Context, _ events.CacheKeyRequested) ([]events.Event, error) {
			close(started)
			<-ctx.Done() // a transfer that would never end on its own
			causes <- context.Cause(ctx)
			return nil, failure.Unavailable(context.Cause(ctx))
		}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never started")
	}
	t0 := time.Now()
	stopA()
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("the stop took %s with a grace of 200ms", d)
	}
	if cause := <-causes; !errors.Is(cause, bus.ErrStopping) {
		t.Errorf("the handler's ctx ended with %v, want ErrStopping", cause)
	}
	runWorkerConfig(t, env, "b", bus.WorkerConfig{Consumer: c}, bus.Typed(func(_ context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		return []events.Event{hitFor(in)}, nil
	}))
	hit := rec.Wait(t, 5*time.Second, events.TypeCacheHit, events.TypeSourceFailed)
	if hit.Type() != events.TypeCacheHit || hit.Source != "/stevedore/test/b" {
		t.Fatalf("the build ended with %v from %s, want the other replica's hit", bustest.Summary([]events.Event{hit}), hit.Source)
	}
	waitAcked(t, env, events.ConsumerPuller)
	if failed := rec.OfType(events.TypeSourceFailed); len(failed) != 0 {
		t.Errorf("the stop failed the build: %v", bustest.Summary(failed))
	}
}

// A handler that finishes within the grace is acked as usual, its outputs
// published: the stop waits for it.
func TestWorkerStopGraceLetsAHandlerFinish(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	started, release := make(chan struct{}), make(chan struct{})
	stop, _ := runWorkerConfig(t, env, "a", bus.WorkerConfig{Consumer: testConsumer(), StopGrace: 5 * time.Second},
		bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
			close(started)
			<-release
			if err := context.Cause(ctx); err != nil {
				return nil, err
			}
			return []events.Event{hitFor(in)}, nil
		}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", request)
	<-started
	// The handler is held until the stop has been waiting for it a while:
	// it finishes during the stop, not before.
	stopping, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		close(stopping)
		stop()
		close(stopped)
	}()
	<-stopping
	select {
	case <-stopped:
		t.Fatal("the stop returned while a handler was running")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the stop did not return after the handler finished")
	}
	if hit := rec.Wait(t, 5*time.Second, events.TypeCacheHit, events.TypeSourceFailed); hit.Type() != events.TypeCacheHit {
		t.Fatalf("the build ended with %v", bustest.Summary([]events.Event{hit}))
	}
	waitAcked(t, env, events.ConsumerPuller)
}

// storedSeq is the stream sequence of the stored event e (the only one on
// its subject).
func storedSeq(t *testing.T, env *bustest.Env, e events.Event) uint64 {
	t.Helper()
	stream, err := env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(t.Context(), events.Subject(e.BuildID, e.Type()))
	if err != nil {
		t.Fatal(err)
	}
	return m.Sequence
}

// A consumer provisioned with a wider filter than the catalog gives its
// service (an old definition, an operator's edit) delivers a type the
// worker does not take: it is terminated with the reason, and no handler
// runs.
func TestWorkerRefusesATypeTheCatalogDoesNotGiveIt(t *testing.T) {
	t.Parallel()
	wide := testConsumer()
	wide.Types = append(wide.Types, events.TypeSnapshotRequested)
	env := startEnvWith(t, wide)
	var calls atomic.Int32
	runWorker(t, env, "w1", bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) {
		calls.Add(1)
		return []events.Event{hitFor(in)}, nil
	}))
	rec := env.Record(t, "b1")
	env.Request(t, "b1", events.SnapshotRequested{Source: request.Source})
	f, _ := events.Failure(rec.Wait(t, 5*time.Second, events.TypeSnapshotFailed).Data)
	if !strings.Contains(f.Reason, "does not take "+string(events.TypeSnapshotRequested)) || !strings.Contains(f.Reason, "gives it to snapshotter") ||
		f.Code != "invalid" || f.Attempts != 1 {
		t.Errorf("failed event = %+v", f)
	}
	waitAcked(t, env, events.ConsumerPuller)
	if calls.Load() != 0 {
		t.Errorf("handler called %d times for a type the consumer does not take", calls.Load())
	}
}

// A worker whose handlers are not exactly its consumer's types does not
// start: a type left without a handler, or a handler the catalog gives
// another service, fails Run at once.
func TestWorkerRunRefusesHandlersThatDisagreeWithTheCatalog(t *testing.T) {
	t.Parallel()
	env := startEnv(t)
	ok := bus.Typed(func(ctx context.Context, in events.CacheKeyRequested) ([]events.Event, error) { return nil, nil })
	for _, tc := range []struct {
		name   string
		handle []events.Type
		want   string
	}{
		{"missing", nil, "receives " + string(events.TypeCacheKeyRequested) + " but has no handler"},
		{"foreign", []events.Type{events.TypeCacheKeyRequested, events.TypeSourceResolveRequested}, "has a handler for " + string(events.TypeSourceResolveRequested) + ", which the event catalog gives to resolver"},
	} {
		w, err := bus.NewWorker(env.JS, bus.WorkerConfig{Consumer: testConsumer(), Source: "/stevedore/test/" + tc.name, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range tc.handle {
			w.Handle(typ, ok)
		}
		// Cancelled: a Run that starts returns nil at once.
		ctx, cancel := context.WithCancelCause(t.Context())
		cancel(errors.New("not started"))
		if err := w.Run(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Run = %v, want %q", tc.name, err, tc.want)
		}
	}
}
