package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// recovered is what recoverStack found of a process that ended without
// cleaning up (SIGKILL).
type recovered struct {
	// Leases is how many leases were dropped.
	Leases int
	// Redelivered is how many messages in flight go out again at once.
	Redelivered int
}

// serviceConsumers are the durable consumers the embedded stack's services
// read.
var serviceConsumers = []string{events.ConsumerResolver, events.ConsumerPuller, events.ConsumerSnapshotter, events.ConsumerExporter}

// recoverStack makes the embedded stack go on at once where a killed
// process on the same data dir stopped, instead of after the leases' TTL
// and the consumers' AckWait. It is only right on a server this process
// alone runs services on, which the data dir's lock guarantees: every
// lease then belongs to the dead process, and so does every message
// delivered and not acknowledged. The leases are dropped; a consumer with
// messages in flight is made again from its acknowledgement floor, so the
// server delivers them now (what was acknowledged above the floor comes
// again too; the events it derives have the same ids and the stream drops
// the copies).
func recoverStack(ctx context.Context, js jetstream.JetStream) (recovered, error) {
	var r recovered
	kv, err := js.KeyValue(ctx, events.BucketLeases)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return r, fmt.Errorf("recover leases: %w", err)
	}
	if kv != nil {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return r, fmt.Errorf("recover leases: %w", err)
		}
		for k := range keys.Keys() {
			if err := kv.Purge(ctx, k); err != nil {
				return r, fmt.Errorf("recover lease %s: %w", k, err)
			}
			r.Leases++
		}
	}
	for _, name := range serviceConsumers {
		c, err := js.Consumer(ctx, events.StreamEvents, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return r, fmt.Errorf("recover consumer %s: %w", name, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return r, fmt.Errorf("recover consumer %s: %w", name, err)
		}
		if info.NumAckPending == 0 {
			continue
		}
		cfg := info.Config
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = info.AckFloor.Stream + 1
		cfg.OptStartTime = nil
		if err := js.DeleteConsumer(ctx, events.StreamEvents, name); err != nil {
			return r, fmt.Errorf("recover consumer %s: %w", name, err)
		}
		if _, err := js.CreateConsumer(ctx, events.StreamEvents, cfg); err != nil {
			return r, fmt.Errorf("recover consumer %s: %w", name, err)
		}
		r.Redelivered += info.NumAckPending
	}
	return r, nil
}
