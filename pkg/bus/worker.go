package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// WorkerConfig configures one replica's share of a service consumer.
type WorkerConfig struct {
	// Consumer is the durable consumer to bind to; it must be provisioned.
	Consumer Consumer
	// Source is the CloudEvents source of the events this replica emits,
	// e.g. "/stevedore/puller/host-1". Required.
	Source string
	// Concurrency is how many messages this replica handles at once; it is
	// also its pull prefetch. Zero means 4.
	Concurrency int
	// Heartbeat is how often InProgress is sent while a handler runs. Zero
	// means a third of the consumer's AckWait.
	Heartbeat time.Duration
	// Backoff is the redelivery delay after a retryable failure, given the
	// delivery count (1 for the first). Nil means ExponentialBackoff(1s, 30s).
	Backoff func(delivered int) time.Duration
	// Logger receives runtime logs. Nil means slog.Default().
	Logger *slog.Logger
	// Middleware wraps every handler, outermost first.
	Middleware []Middleware
	// StopGrace is how long the handlers in flight when Run's ctx ends may
	// go on. Then their ctx ends, with cause ErrStopping, and the message
	// of a handler that returns because of it is handed back at once (a
	// Nak without delay: another replica takes it now, not after AckWait)
	// with no failed event; a handler that finishes in time is acked as
	// usual. Zero means DefaultStopGrace; negative means the handlers are
	// waited for however long they take.
	StopGrace time.Duration
}

// DefaultStopGrace is WorkerConfig.StopGrace's default: half of the 10s a
// container engine gives a stopping container before it kills it, so
// that the messages a replica hands back are handed back before it is
// killed.
const DefaultStopGrace = 5 * time.Second

// ErrStopping is the cause a handler's ctx ends with when its replica
// stops and WorkerConfig.StopGrace has run out.
var ErrStopping = errors.New("the replica is stopping")

func (c *WorkerConfig) setDefaults() {
	c.Consumer.setDefaults()
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = c.Consumer.AckWait / 3
	}
	if c.Backoff == nil {
		c.Backoff = ExponentialBackoff(time.Second, 30*time.Second)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
}

// Validate reports a configuration the worker cannot run with.
func (c WorkerConfig) Validate() error {
	if err := c.Consumer.Validate(); err != nil {
		return err
	}
	if c.Source == "" {
		return errors.New("worker: empty source")
	}
	if c.Concurrency < 0 || c.Heartbeat < 0 {
		return errors.New("worker: negative concurrency or heartbeat")
	}
	return nil
}

// ExponentialBackoff returns base·2^(n-1), capped at max.
func ExponentialBackoff(base, limit time.Duration) func(int) time.Duration {
	return func(n int) time.Duration {
		d := base
		for i := 1; i < n && d < limit; i++ {
			d *= 2
		}
		return min(d, limit)
	}
}

// Worker runs handlers for the messages of one durable consumer: it
// decodes, calls the handler with InProgress heartbeats, publishes the
// outputs with derived ids, then acks; on failure it retries with
// NakWithDelay or emits a failed event and terminates the message.
type Worker struct {
	js       jetstream.JetStream
	cfg      WorkerConfig
	handlers map[events.Type]Handler
	pub      *Publisher
}

// NewWorker returns a worker bound to js. Register handlers with Handle
// before calling Run.
func NewWorker(js jetstream.JetStream, cfg WorkerConfig) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Worker{js: js, cfg: cfg, handlers: map[events.Type]Handler{}, pub: NewPublisher(js, WithDerivedIDs())}, nil
}

// Handle registers h for events of type t, wrapped in the configured
// middleware.
func (w *Worker) Handle(t events.Type, h Handler) {
	for i := len(w.cfg.Middleware) - 1; i >= 0; i-- {
		h = w.cfg.Middleware[i](h)
	}
	w.handlers[t] = h
}

// Run pulls and handles messages until ctx is done, then waits for the
// handlers in flight, cancelling them after the StopGrace. It returns nil
// on cancellation. It refuses to start unless the handlers are exactly
// the consumer's types.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.handlesItsTypes(); err != nil {
		return err
	}
	cons, err := w.js.Consumer(ctx, events.StreamEvents, w.cfg.Consumer.Name)
	if err != nil {
		if context.Cause(ctx) != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("bind consumer %s: %w", w.cfg.Consumer.Name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(w.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("pull from %s: %w", w.cfg.Consumer.Name, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	// The messages outlive a shutdown that starts while they are being
	// handled (finished, or handed back: never dropped); their handlers
	// outlive it by StopGrace at most.
	base := context.WithoutCancel(ctx)
	handlers, stopHandlers := context.WithCancelCause(base)
	defer stopHandlers(errRunOver) // after wg.Wait: deferred first
	go w.graceAfter(ctx, handlers, stopHandlers)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, w.cfg.Concurrency)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := it.Next()
		if err != nil {
			<-slots
			if context.Cause(ctx) != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// The consumer's leader is being elected or the cluster is
				// busy; the iterator pulls again on its own.
				w.cfg.Logger.Warn("no heartbeat from the consumer; pulling again", "consumer", w.cfg.Consumer.Name)
				continue
			}
			return fmt.Errorf("next message from %s: %w", w.cfg.Consumer.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			w.process(base, handlers, msg)
		}()
	}
}

// handlesItsTypes reports a consumer type without a handler, or a handler
// for a type the consumer does not receive.
func (w *Worker) handlesItsTypes() error {
	var errs []error
	for _, t := range w.cfg.Consumer.Types {
		if _, ok := w.handlers[t]; !ok {
			errs = append(errs, fmt.Errorf("consumer %s receives %s but has no handler for it", w.cfg.Consumer.Name, t))
		}
	}
	for _, t := range slices.Sorted(maps.Keys(w.handlers)) {
		if !slices.Contains(w.cfg.Consumer.Types, t) {
			errs = append(errs, fmt.Errorf("consumer %s has a handler for %s, which the event catalog gives to %s", w.cfg.Consumer.Name, t, consumersOf(t)))
		}
	}
	return errors.Join(errs...)
}

// consumersOf names the components the catalog gives t to.
func consumersOf(t events.Type) string {
	spec, ok := events.Lookup(t)
	if !ok {
		return "no one (it is not in the catalog)"
	}
	if len(spec.Consumers) == 0 {
		return "no service (watchers only)"
	}
	return strings.Join(spec.Consumers, ", ")
}

// errRunOver ends the handlers' ctx once Run has waited for them all.
var errRunOver = errors.New("worker stopped")

// graceAfter ends handlers' ctx with ErrStopping StopGrace after run's
// ctx ends (never with a negative StopGrace), or returns when handlers'
// ctx ends first.
func (w *Worker) graceAfter(run, handlers context.Context, stop context.CancelCauseFunc) {
	select {
	case <-run.Done():
	case <-handlers.Done():
		return
	}
	if w.cfg.StopGrace < 0 {
		return
	}
	t := time.NewTimer(w.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-t.C:
		stop(ErrStopping)
	case <-handlers.Done():
	}
}

// process handles one message end to end: the handler runs under
// handlers (which ends when the replica's stop grace runs out), the
// runtime's own publishes and acknowledgements under ctx (which does not
// end).
func (w *Worker) process(ctx, handlers context.Context, msg jetstream.Msg) {
	log := w.cfg.Logger
	delivered := 1
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		delivered = deliveries(md.NumDelivered)
		seq = md.Sequence.Stream
	}
	in, err := events.Decode(events.Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
	if err != nil {
		w.fail(ctx, msg, in, failure.Invalid(fmt.Errorf("undecodable event: %w", err)), delivered)
		return
	}
	if !slices.Contains(w.cfg.Consumer.Types, in.Type()) {
		w.fail(ctx, msg, in, failure.Invalid(fmt.Errorf("consumer %s does not take %s: the event catalog gives it to %s", w.cfg.Consumer.Name, in.Type(), consumersOf(in.Type()))), delivered)
		return
	}
	h, ok := w.handlers[in.Type()]
	if !ok {
		w.fail(ctx, msg, in, failure.Invalid(fmt.Errorf("consumer %s has no handler for %s", w.cfg.Consumer.Name, in.Type())), delivered)
		return
	}

	d := newDeriver(in, seq, w.cfg.Source)
	em := newEmitter(ctx, d, w.pub, log)
	var erase atomic.Bool
	hctx, cancel := context.WithCancelCause(context.WithValue(context.WithValue(handlers, emitterKey{}, em), eraseKey{}, &erase))
	beat := time.NewTicker(w.cfg.Heartbeat)
	done := make(chan struct{})
	go func() {
		defer beat.Stop()
		for {
			select {
			case <-done:
				return
			case <-beat.C:
				if err := msg.InProgress(); err != nil {
					log.Warn("in-progress heartbeat failed", "event_id", in.ID, "error", err)
				}
			}
		}
	}()
	outs, err := h(hctx, in)
	cancel(errors.New("handler returned"))
	// Heartbeats go on until the outputs are published: a publish may wait
	// for a stream leader's election, and the message must not be
	// redelivered meanwhile.
	stopBeats := sync.OnceFunc(func() { close(done) })
	defer stopBeats()
	em.close() // what the handler emitted goes out before its outputs

	if err != nil && errors.Is(context.Cause(handlers), ErrStopping) {
		stopBeats()
		// Cut short by the stop, not failed: another replica starts over.
		log.Info("handler stopped with the replica; message handed back", "event_id", in.ID, "build_id", in.BuildID, "error", err)
		if nerr := msg.Nak(); nerr != nil {
			log.Warn("hand back failed; the message returns after AckWait", "event_id", in.ID, "error", nerr)
		}
		return
	}
	if err != nil {
		stopBeats()
		w.onError(ctx, msg, in, err, delivered)
		return
	}
	derived := d.all(outs, time.Now())
	if err := w.pub.PublishAll(ctx, derived); err != nil {
		stopBeats()
		log.Warn("publishing outputs failed; will retry", "event_id", in.ID, "build_id", in.BuildID, "error", err)
		w.onError(ctx, msg, in, failure.Unavailable(err), delivered)
		return
	}
	stopBeats()
	if err := msg.Ack(); err != nil {
		log.Warn("ack failed; the message will be redelivered and its outputs deduplicated", "event_id", in.ID, "error", err)
	}
	if erase.Load() {
		w.erase(ctx, msg, in)
	}
}

// erase deletes msg, whose handler asked for it (Erase), from its stream.
func (w *Worker) erase(ctx context.Context, msg jetstream.Msg, in events.Event) {
	md, err := msg.Metadata()
	if err == nil {
		var stream jetstream.Stream
		if stream, err = w.js.Stream(ctx, md.Stream); err == nil {
			err = stream.SecureDeleteMsg(ctx, md.Sequence.Stream)
		}
	}
	if err != nil {
		w.cfg.Logger.Warn("erasing the input failed; it stays in the stream", "event_id", in.ID, "build_id", in.BuildID, "error", err)
	}
}

// onError retries or fails a message according to Action.
func (w *Worker) onError(ctx context.Context, msg jetstream.Msg, in events.Event, err error, delivered int) {
	v := Action(err, delivered, w.cfg.Consumer.MaxDeliver, w.cfg.Backoff)
	if v.Retry {
		w.announceRetry(ctx, in, err, delivered, v.Delay)
		if nerr := msg.NakWithDelay(v.Delay); nerr != nil {
			// NATS is away (restarting, a leader moving): keep trying while
			// the message is still ours, so the retry does not wait for
			// AckWait to come round.
			w.cfg.Logger.Warn("nak failed; trying again until AckWait", "event_id", in.ID, "error", nerr)
			go w.nakLater(msg, v.Delay)
		}
		return
	}
	if !failure.Permanent(err) {
		err = fmt.Errorf("giving up after %d attempts: %w", delivered, err)
	}
	w.fail(ctx, msg, in, err, delivered)
}

// nakRetry is how often nakLater tries again.
const nakRetry = 500 * time.Millisecond

// nakLater repeats a nak that failed until one goes through or the
// consumer's AckWait has passed (the server redelivers by then anyway).
func (w *Worker) nakLater(msg jetstream.Msg, delay time.Duration) {
	deadline := time.Now().Add(w.cfg.Consumer.AckWait)
	for time.Now().Before(deadline) {
		time.Sleep(nakRetry)
		if msg.NakWithDelay(delay) == nil {
			return
		}
	}
}

// fail publishes the failed event for in (as far as in could be decoded)
// and terminates the message; the termination advisory lets the DLQ mover
// keep a copy.
func (w *Worker) fail(ctx context.Context, msg jetstream.Msg, in events.Event, err error, delivered int) {
	step := in.Type()
	var seq uint64
	if md, mdErr := msg.Metadata(); mdErr == nil {
		seq = md.Sequence.Stream
	}
	if in.BuildID == "" {
		in, step = envelopeFromTransport(msg.Subject(), msg.Headers(), seq)
	}
	if in.BuildID != "" {
		failed := failureEvent(in, seq, step, err, delivered, w.cfg.Source, time.Now())
		if perr := w.pub.PublishAll(ctx, []events.Event{failed}); perr != nil {
			// Without the failed event the client would wait forever: retry.
			w.cfg.Logger.Warn("publishing failed event failed; will retry", "event_id", in.ID, "error", perr)
			_ = msg.NakWithDelay(w.cfg.Backoff(delivered))
			return
		}
	}
	reason := err.Error()
	if len(reason) > 512 {
		reason = reason[:512]
	}
	if terr := msg.TermWithReason(reason); terr != nil {
		w.cfg.Logger.Warn("term failed", "event_id", in.ID, "error", terr)
	}
}

// deliveries converts JetStream's delivery count, clamped (MaxDeliver keeps
// it small anyway).
func deliveries(n uint64) int { return int(min(n, math.MaxInt32)) }

// envelopeFromTransport rebuilds what the transport tells of an event that
// did not decode: its build and step from the subject, its id from
// Nats-Msg-Id or else its sequence in the events stream. The build id is
// empty when the subject is not a build event's.
func envelopeFromTransport(subject string, header nats.Header, seq uint64) (events.Event, events.Type) {
	var in events.Event
	var step events.Type
	buildID, name, err := events.SplitSubject(subject)
	if err != nil {
		return in, step
	}
	in.BuildID = buildID
	if spec, ok := events.LookupName(name); ok {
		step = spec.Type
	}
	in.ID = header.Get(events.HeaderMsgID)
	if in.ID == "" {
		in.ID = fmt.Sprintf("%s-%d", events.StreamEvents, seq)
	}
	return in, step
}

// FailureEvent is the failed event the runtime emits when in cannot be
// handled at step: a source.failed (snapshot.failed for the snapshot step)
// carrying the input's source, the step, the error text and its code, with
// an id derived from the input.
func FailureEvent(in events.Event, step events.Type, err error, attempts int, source string, now time.Time) events.Event {
	return failureEvent(in, 0, step, err, attempts, source, now)
}

// failureEvent is FailureEvent for the input stored at stream sequence seq
// (0: not known).
func failureEvent(in events.Event, seq uint64, step events.Type, err error, attempts int, source string, now time.Time) events.Event {
	src, _ := events.SourceOf(in.Data)
	failed := events.New(events.NewFailure(step, events.SourceFailed{
		Source:   src,
		Step:     step,
		Reason:   err.Error(),
		Code:     failure.Code(err),
		Attempts: attempts,
	}))
	return newDeriver(in, seq, source).derive(failed, now)
}

// DeriveAll fills in the envelopes of a handler's outputs (see
// events.Derive); the n-th output of a type gets ordinal n.
func DeriveAll(in events.Event, outs []events.Event, source string, now time.Time) []events.Event {
	return newDeriver(in, 0, source).all(outs, now)
}

// deriver numbers the events derived from one input, type by type, across
// the events a handler emits while it runs and those it returns.
type deriver struct {
	in     events.Event
	cause  string
	source string
	mu     sync.Mutex
	seen   map[events.Type]int
}

// newDeriver derives from in, stored at stream sequence seq (0: not
// known). The ids derive from the input's id and its sequence: a
// redelivery of the one stored message yields the same ids, while two
// stored messages that carry one id (a client may publish any id, with
// another Nats-Msg-Id) are kept apart instead of sharing outputs.
func newDeriver(in events.Event, seq uint64, source string) *deriver {
	return &deriver{in: in, cause: Cause(in.ID, seq), source: source, seen: map[events.Type]int{}}
}

// Cause is what the ids of the events derived from the input with id id,
// stored at stream sequence seq, derive from (events.DeriveID's cause):
// "<id>@<seq>", or id alone when seq is 0 (not known).
func Cause(id string, seq uint64) string {
	if seq == 0 {
		return id
	}
	return id + "@" + strconv.FormatUint(seq, 10)
}

func (d *deriver) derive(out events.Event, now time.Time) events.Event {
	d.mu.Lock()
	n := d.seen[out.Type()]
	d.seen[out.Type()]++
	d.mu.Unlock()
	e := events.Derive(d.in, out, n, d.source, now)
	e.ID = events.DeriveID(d.cause, out.Type(), n)
	return e
}

func (d *deriver) all(outs []events.Event, now time.Time) []events.Event {
	derived := make([]events.Event, 0, len(outs))
	for _, out := range outs {
		derived = append(derived, d.derive(out, now))
	}
	return derived
}

// toNATS converts an encoded event to a NATS message.
func toNATS(m events.Message) *nats.Msg {
	return &nats.Msg{Subject: m.Subject, Header: nats.Header(m.Header), Data: m.Data}
}
