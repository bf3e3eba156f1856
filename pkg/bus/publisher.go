package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// PublishTimeout bounds the wait for the stream's acknowledgement of an
// event.
const PublishTimeout = 10 * time.Second

// ResendInterval is how long a publish waits for an acknowledgement before
// it sends the event again (same id, so the stream keeps one copy).
const ResendInterval = 2 * time.Second

// ErrNoAck reports that the stream did not acknowledge an event in time,
// or that nobody answered for it (no stream listens on the subject, or the
// stream has no leader right now). The event may or may not be stored;
// republishing it with the same id is safe.
var ErrNoAck = errors.New("no acknowledgement from the events stream")

// ErrDuplicateID reports that the stream already holds a message with the
// id of an event a client publishes (a build id or event id used twice):
// the stream dropped the event, and the build would otherwise be merged
// with the earlier one.
var ErrDuplicateID = errors.New("event id already used")

// Publisher publishes events to the events stream and waits for the
// stream's acknowledgements. Events of one PublishAll call are sent back to
// back on one connection, so the stream stores them in order, and their
// acknowledgements are awaited together: one round trip for a handler's
// outputs, not one per event.
type Publisher struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts publisherOptions

	once    sync.Once
	initErr error
	prefix  string
	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
	// key is the fleet key (FleetKey), read when first needed; guarded
	// by mu.
	key []byte
}

// fleetKey returns the fleet key, read once it is first needed: a
// failure to read it is Unavailable (the input is retried).
func (p *Publisher) fleetKey(ctx context.Context) ([]byte, error) {
	p.mu.Lock()
	key := p.key
	p.mu.Unlock()
	if key != nil {
		return key, nil
	}
	key, err := FleetKey(ctx, p.js)
	if err != nil {
		return nil, failure.Unavailable(err)
	}
	p.mu.Lock()
	p.key = key
	p.mu.Unlock()
	return key, nil
}

// NewPublisher returns a Publisher over js's connection. Without options
// it publishes as a client does: see WithDerivedIDs for a service's.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	var o publisherOptions
	for _, opt := range opts {
		opt(&o)
	}
	return &Publisher{nc: js.Conn(), js: js, opts: o, waiting: map[string]chan *nats.Msg{}}
}

// PublisherOption is an optional knob of NewPublisher.
type PublisherOption func(*publisherOptions)

type publisherOptions struct {
	derived bool
}

// WithDerivedIDs makes the Publisher publish a service's events, whose ids
// are derived (events.DeriveID). The stream drops any message whose
// Nats-Msg-Id it already holds, stream-wide, and a client may publish
// any id on the subjects it is allowed: so a duplicate is accepted only
// when the stored message is this event's earlier copy (the same subject
// and type: an input processed twice), which only a service can have
// published. Any other holder of the id (a client's message, or a lost
// one) makes the Publisher publish the event again under the next id of a
// deterministic chain that only the services can compute (ReissueID, with
// the fleet key), so that no message a client publishes
// can make a service's output get dropped, and an input processed twice
// still yields one copy of each output.
//
// The default, a client's: an event the stream reports as a duplicate,
// other than of a copy this same call sent again, is refused with
// ErrDuplicateID (a build id or event id used twice): the stream did not
// store it.
func WithDerivedIDs() PublisherOption {
	return func(o *publisherOptions) { o.derived = true }
}

// init subscribes to the publisher's reply subjects.
func (p *Publisher) init() error {
	p.once.Do(func() {
		p.prefix = p.nc.NewRespInbox() + "."
		_, p.initErr = p.nc.Subscribe(p.prefix+"*", func(m *nats.Msg) {
			p.mu.Lock()
			ch := p.waiting[m.Subject]
			delete(p.waiting, m.Subject)
			p.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		})
	})
	return p.initErr
}

// Publish encodes e (binary mode, Nats-Msg-Id = e.ID) and publishes it. A
// duplicate of an event the stream already holds is not an error: the
// stream drops it, which is the point of deterministic ids.
func (p *Publisher) Publish(ctx context.Context, e events.Event) error {
	return p.PublishAll(ctx, []events.Event{e})
}

// PublishAll publishes es in order and waits for every acknowledgement. It
// returns the first error; events that were acknowledged stay published,
// and republishing them later is harmless.
func (p *Publisher) PublishAll(ctx context.Context, es []events.Event) error {
	if len(es) == 0 {
		return nil
	}
	if err := p.init(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	es = slices.Clone(es)
	msgs := make([]*nats.Msg, len(es))
	for i, e := range es {
		m, err := encodeForStream(e)
		if err != nil {
			return err
		}
		msgs[i] = m
	}
	replies := make([]chan *nats.Msg, len(msgs))
	sent := make([]int, len(msgs))
	defer func() {
		p.mu.Lock()
		for _, m := range msgs {
			delete(p.waiting, m.Reply)
		}
		p.mu.Unlock()
	}()
	send := func(i int) error {
		sent[i]++
		replies[i] = make(chan *nats.Msg, 1)
		p.mu.Lock()
		p.waiting[msgs[i].Reply] = replies[i]
		p.mu.Unlock()
		if err := p.nc.PublishMsg(msgs[i]); err != nil {
			return fmt.Errorf("publish %s: %w", msgs[i].Subject, err)
		}
		return nil
	}
	for i, m := range msgs {
		m.Reply = p.prefix + nuid.Next()
		if err := send(i); err != nil {
			return err
		}
	}
	// An event whose acknowledgement does not come (its stream's leader
	// went away, or is being elected) is sent again with the same id
	// until PublishTimeout: the stream stores it once.
	timeout := time.NewTimer(PublishTimeout)
	defer timeout.Stop()
	resend := time.NewTicker(ResendInterval)
	defer resend.Stop()
	var last error
	for i := 0; i < len(msgs); {
		select {
		case r := <-replies[i]:
			ack, err := readPubAck(r)
			if errors.Is(err, ErrNoAck) {
				last = err // no responders: try again at the next tick
				continue
			}
			if err != nil {
				return fmt.Errorf("publish %s: %w", msgs[i].Subject, err)
			}
			if ack.Duplicate {
				reissue, err := p.duplicate(ctx, msgs[i], ack.Seq, sent[i])
				if err != nil {
					return fmt.Errorf("publish %s: event id %s: %w", msgs[i].Subject, es[i].ID, err)
				}
				if reissue {
					key, err := p.fleetKey(ctx)
					if err != nil {
						return fmt.Errorf("publish %s: event id %s: %w", msgs[i].Subject, es[i].ID, err)
					}
					es[i].ID = ReissueID(key, es[i].ID, es[i].Type())
					m, err := encodeForStream(es[i])
					if err != nil {
						return err
					}
					m.Reply = p.prefix + nuid.Next()
					msgs[i] = m
					if err := send(i); err != nil {
						return err
					}
					continue
				}
			}
			i++
		case <-resend.C:
			for j := i; j < len(msgs); j++ {
				select {
				case r := <-replies[j]:
					replies[j] <- r // answered meanwhile: keep it
					continue
				default:
				}
				if err := send(j); err != nil {
					return err
				}
			}
		case <-timeout.C:
			if last == nil {
				last = fmt.Errorf("%w within %s", ErrNoAck, PublishTimeout)
			}
			return fmt.Errorf("publish %s: %w", msgs[i].Subject, last)
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", msgs[i].Subject, context.Cause(ctx))
		}
	}
	return nil
}

// encodeForStream encodes e as a message for the events stream.
func encodeForStream(e events.Event) (*nats.Msg, error) {
	m, err := events.Encode(e)
	if err != nil {
		return nil, failure.Invalid(err)
	}
	msg := toNATS(m)
	msg.Header.Set(jetstream.ExpectedStreamHeader, events.StreamEvents)
	return msg, nil
}

// duplicate decides about a message the stream reported as a duplicate of
// its message seq: nil when it is the event's own earlier copy, reissue
// when a service's event must be published again under another id, and
// ErrDuplicateID when a client's event was refused. sends counts how often
// this call sent the message.
func (p *Publisher) duplicate(ctx context.Context, m *nats.Msg, seq uint64, sends int) (reissue bool, err error) {
	if !p.opts.derived {
		if sends > 1 {
			return false, nil // the stream stored an earlier send of this call
		}
		return false, fmt.Errorf("%w: the stream holds another message with this id (a build id or event id used twice?)", ErrDuplicateID)
	}
	stream, err := p.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return false, failure.Unavailable(fmt.Errorf("check duplicate: %w", err))
	}
	stored, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, failure.Unavailable(fmt.Errorf("check duplicate #%d: %w", seq, err))
	}
	typ := events.HeaderPrefix + "type"
	own := stored.Subject == m.Subject && stored.Header.Get(typ) == m.Header.Get(typ)
	return !own, nil
}

// pubAck is the stream's answer to a publish.
type pubAck struct {
	Stream string `json:"stream"`
	// Seq is the stored message's sequence: the earlier copy's for a
	// duplicate.
	Seq uint64 `json:"seq"`
	// Duplicate reports that the stream held the id already and dropped
	// the message.
	Duplicate bool `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func readPubAck(r *nats.Msg) (pubAck, error) {
	var ack pubAck
	if len(r.Data) == 0 && r.Header.Get("Status") == "503" {
		return ack, fmt.Errorf("%w: no responders", ErrNoAck)
	}
	if err := json.Unmarshal(r.Data, &ack); err != nil {
		return ack, fmt.Errorf("%w: unreadable acknowledgement: %w", ErrNoAck, err)
	}
	if ack.Error != nil {
		return ack, fmt.Errorf("stream refused the event: %s (code %d, error %d)", ack.Error.Description, ack.Error.Code, ack.Error.ErrCode)
	}
	if ack.Stream != events.StreamEvents {
		return ack, fmt.Errorf("%w: acknowledged by stream %q", ErrNoAck, ack.Stream)
	}
	return ack, nil
}
