package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Headers of a dead letter in the DLQ stream, beside the original headers.
const (
	HeaderDLQSubject    = "Stevedore-Dlq-Subject"
	HeaderDLQSequence   = "Stevedore-Dlq-Sequence"
	HeaderDLQConsumer   = "Stevedore-Dlq-Consumer"
	HeaderDLQReason     = "Stevedore-Dlq-Reason"
	HeaderDLQDeliveries = "Stevedore-Dlq-Deliveries"
)

// advisory is the part of JetStream's terminated and max-deliveries
// advisories the mover reads.
type advisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
}

// DLQ moves dead letters: for every terminated or max-delivered message of
// the events stream it copies the original into the DLQ stream (subject
// stevedore.dlq.<consumer>, original headers plus Stevedore-Dlq-*). When a
// message ran out of deliveries without any worker failing it (workers that
// crashed or timed out), it also emits the failed event, so the build ends
// instead of hanging. Every service runs one; they share a durable consumer.
type DLQ struct {
	js     jetstream.JetStream
	pub    *Publisher
	source string
	log    *slog.Logger
}

// NewDLQ returns a mover that emits failed events as source.
func NewDLQ(js jetstream.JetStream, source string, log *slog.Logger) *DLQ {
	if log == nil {
		log = slog.Default()
	}
	return &DLQ{js: js, pub: NewPublisher(js, WithDerivedIDs()), source: source, log: log}
}

// Run moves dead letters until ctx is done.
func (d *DLQ) Run(ctx context.Context) error {
	cons, err := d.js.Consumer(ctx, events.StreamAdvisories, events.ConsumerDLQ)
	if err != nil {
		if context.Cause(ctx) != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("bind consumer %s: %w", events.ConsumerDLQ, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4))
	if err != nil {
		return fmt.Errorf("pull advisories: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if context.Cause(ctx) != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// A leader election or a busy cluster: the iterator pulls
				// again on its own.
				d.log.Warn("no heartbeat from the dead-letter consumer; pulling again")
				continue
			}
			return fmt.Errorf("next advisory: %w", err)
		}
		if err := d.move(context.WithoutCancel(ctx), msg); err != nil {
			d.log.Warn("moving dead letter failed; will retry", "error", err)
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

func (d *DLQ) move(ctx context.Context, msg jetstream.Msg) error {
	var adv advisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil || adv.StreamSeq == 0 {
		d.log.Warn("ignoring malformed advisory", "subject", msg.Subject())
		return nil
	}
	stream, err := d.js.Stream(ctx, adv.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", adv.Stream, err)
	}
	orig, err := stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		d.log.Warn("dead letter already gone from its stream", "stream", adv.Stream, "seq", adv.StreamSeq)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get %s #%d: %w", adv.Stream, adv.StreamSeq, err)
	}
	maxDelivered := strings.HasPrefix(msg.Subject(), AdvisoryMaxDeliveries)
	reason := adv.Reason
	if maxDelivered {
		reason = fmt.Sprintf("no worker acknowledged it in %d deliveries", adv.Deliveries)
	}

	dl := nats.NewMsg(events.DLQSubject(adv.Consumer))
	for k, v := range orig.Header {
		dl.Header[k] = append([]string(nil), v...)
	}
	dl.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("dlq-%s-%s-%d", adv.Consumer, adv.Stream, adv.StreamSeq))
	dl.Header.Set(HeaderDLQSubject, orig.Subject)
	dl.Header.Set(HeaderDLQSequence, strconv.FormatUint(adv.StreamSeq, 10))
	dl.Header.Set(HeaderDLQConsumer, adv.Consumer)
	dl.Header.Set(HeaderDLQReason, reason)
	dl.Header.Set(HeaderDLQDeliveries, strconv.FormatUint(adv.Deliveries, 10))
	dl.Data = orig.Data
	if _, err := d.js.PublishMsg(ctx, dl, jetstream.WithExpectStream(events.StreamDLQ)); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}

	if maxDelivered {
		in, step := envelopeFromTransport(orig.Subject, orig.Header, adv.StreamSeq)
		if in.BuildID == "" {
			return nil // not a build event: nobody to tell
		}
		if decoded, err := events.Decode(events.Message{Subject: orig.Subject, Header: orig.Header, Data: orig.Data}); err == nil {
			in = decoded
		}
		failed := failureEvent(in, adv.StreamSeq, step, failure.Unavailable(errors.New(reason)), deliveries(adv.Deliveries), d.source, time.Now())
		if err := d.pub.Publish(ctx, failed); err != nil {
			return fmt.Errorf("publish failed event: %w", err)
		}
	}
	d.log.Info("dead-lettered", "consumer", adv.Consumer, "subject", orig.Subject, "seq", adv.StreamSeq, "reason", reason)
	return nil
}
