package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

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

// Publisher publishes events to the events stream and waits for the
// stream's acknowledgements. Events of one PublishAll call are sent back to
// back on one connection, so the stream stores them in order, and their
// acknowledgements are awaited together: one round trip for a handler's
// outputs, not one per event.
type Publisher struct {
	nc *nats.Conn

	once    sync.Once
	initErr error
	prefix  string
	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
}

// NewPublisher returns a Publisher over js's connection.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{nc: js.Conn(), waiting: map[string]chan *nats.Msg{}}
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
	msgs := make([]*nats.Msg, len(es))
	for i, e := range es {
		m, err := events.Encode(e)
		if err != nil {
			return Invalid(err)
		}
		msgs[i] = toNATS(m)
		msgs[i].Header.Set(jetstream.ExpectedStreamHeader, events.StreamEvents)
	}
	replies := make([]chan *nats.Msg, len(msgs))
	defer func() {
		p.mu.Lock()
		for _, m := range msgs {
			delete(p.waiting, m.Reply)
		}
		p.mu.Unlock()
	}()
	send := func(i int) error {
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
			err := pubAckError(r)
			if errors.Is(err, ErrNoAck) {
				last = err // no responders: try again at the next tick
				continue
			}
			if err != nil {
				return fmt.Errorf("publish %s: %w", msgs[i].Subject, err)
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

// pubAck is the stream's answer to a publish.
type pubAck struct {
	Stream string `json:"stream"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func pubAckError(r *nats.Msg) error {
	if len(r.Data) == 0 && r.Header.Get("Status") == "503" {
		return fmt.Errorf("%w: no responders", ErrNoAck)
	}
	var ack pubAck
	if err := json.Unmarshal(r.Data, &ack); err != nil {
		return fmt.Errorf("%w: unreadable acknowledgement: %w", ErrNoAck, err)
	}
	if ack.Error != nil {
		return fmt.Errorf("stream refused the event: %s (code %d, error %d)", ack.Error.Description, ack.Error.Code, ack.Error.ErrCode)
	}
	if ack.Stream != events.StreamEvents {
		return fmt.Errorf("%w: acknowledged by stream %q", ErrNoAck, ack.Stream)
	}
	return nil
}
