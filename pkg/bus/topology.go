package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Consumer defines one service's durable pull consumer. All replicas of the
// service bind to it and share its messages.
type Consumer struct {
	// Name is the durable name (events.Consumer…). Renaming it starts a new
	// consumer that redelivers every stored event.
	Name string
	// Types are the event types the consumer receives (its filter subjects).
	Types []events.Type
	// AckWait is how long a delivered message may go without an ack or an
	// InProgress before it is redelivered. Zero means 30s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message; the runtime gives up on
	// the last one. Zero means 5.
	MaxDeliver int
	// MaxAckPending bounds the messages in flight across all replicas. Zero
	// means 256.
	MaxAckPending int
}

func (c *Consumer) setDefaults() {
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 256
	}
}

// Validate reports a definition the server would reject or that routes
// nothing.
func (c Consumer) Validate() error {
	if c.Name == "" {
		return errors.New("consumer: empty name")
	}
	if len(c.Types) == 0 {
		return fmt.Errorf("consumer %s: no event types", c.Name)
	}
	for _, t := range c.Types {
		if _, ok := events.Lookup(t); !ok {
			return fmt.Errorf("consumer %s: unknown event type %q", c.Name, t)
		}
	}
	if c.AckWait < 0 || c.MaxDeliver < 0 || c.MaxAckPending < 0 {
		return fmt.Errorf("consumer %s: negative limits", c.Name)
	}
	return nil
}

func (c Consumer) config() jetstream.ConsumerConfig {
	c.setDefaults()
	filters := make([]string, 0, len(c.Types))
	for _, t := range c.Types {
		filters = append(filters, events.TypeFilter(t))
	}
	return jetstream.ConsumerConfig{
		Durable:        c.Name,
		Description:    "stevedore " + c.Name,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.AckWait,
		MaxDeliver:     c.MaxDeliver,
		MaxAckPending:  c.MaxAckPending,
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
}

// A service's consumer receives the types the catalog gives the service
// (events.ConsumedBy).

// ResolverConsumer is the resolver's consumer definition.
func ResolverConsumer() Consumer {
	return Consumer{Name: events.ConsumerResolver, Types: events.ConsumedBy(events.ComponentResolver)}
}

// PullerConsumer is the puller's consumer definition.
func PullerConsumer() Consumer {
	return Consumer{Name: events.ConsumerPuller, Types: events.ConsumedBy(events.ComponentPuller)}
}

// SnapshotterConsumer is the snapshotter's consumer definition. Its work is
// long; the worker keeps each message with InProgress heartbeats.
func SnapshotterConsumer() Consumer {
	return Consumer{Name: events.ConsumerSnapshotter, Types: events.ConsumedBy(events.ComponentSnapshotter), AckWait: time.Minute}
}

// ExporterConsumer is the exporter's consumer definition. An export or an
// import moves blobs, so its messages get the snapshotter's AckWait.
func ExporterConsumer() Consumer {
	return Consumer{Name: events.ConsumerExporter, Types: events.ConsumedBy(events.ComponentExporter), AckWait: time.Minute}
}

// Topology is every JetStream resource Stevedore uses.
type Topology struct {
	// Replicas is the replica count of streams and buckets: 1 for a single
	// server, 3 for a cluster. Zero keeps the count a stream or bucket
	// already has (1 for a new one), so a service starting with the default
	// never scales down what an operator provisioned for a cluster.
	Replicas int
	// Memory keeps streams and buckets in memory instead of on disk (tests).
	Memory bool
	// EventsMaxAge is how long build events are kept for replay. Zero means
	// 14 days.
	EventsMaxAge time.Duration
	// Duplicates is the de-duplication window of the events stream. Zero
	// means 5 minutes.
	Duplicates time.Duration
	// DLQMaxAge is how long dead letters are kept. Zero means 30 days.
	DLQMaxAge time.Duration
	// EventsMaxBytes bounds the events stream's storage: past it the
	// oldest events go (DiscardOld), so no client can fill the server's
	// disk with requests. Zero means DefaultEventsMaxBytes; negative means
	// no bound.
	EventsMaxBytes int64
	// DLQMaxBytes bounds the dead-letter stream's (and the advisories
	// stream's) storage the same way. Zero means DefaultDLQMaxBytes;
	// negative means no bound.
	DLQMaxBytes int64
	// Consumers are the service consumers to create. Nil means the
	// resolver, the puller and the snapshotter with their defaults.
	Consumers []Consumer
}

func (t *Topology) setDefaults() {
	if t.EventsMaxAge == 0 {
		t.EventsMaxAge = 14 * 24 * time.Hour
	}
	if t.Duplicates == 0 {
		t.Duplicates = 5 * time.Minute
	}
	if t.DLQMaxAge == 0 {
		t.DLQMaxAge = 30 * 24 * time.Hour
	}
	if t.EventsMaxBytes == 0 {
		t.EventsMaxBytes = DefaultEventsMaxBytes
	}
	if t.DLQMaxBytes == 0 {
		t.DLQMaxBytes = DefaultDLQMaxBytes
	}
	if t.Consumers == nil {
		t.Consumers = []Consumer{ResolverConsumer(), PullerConsumer(), SnapshotterConsumer(), ExporterConsumer()}
	}
}

// Default byte bounds of the streams (Topology.EventsMaxBytes,
// Topology.DLQMaxBytes).
const (
	DefaultEventsMaxBytes = 2 << 30
	DefaultDLQMaxBytes    = 256 << 20
)

// maxBytes is a stream's MaxBytes for a bound: -1 (none) for a negative
// one.
func maxBytes(n int64) int64 {
	if n < 0 {
		return -1
	}
	return n
}

func (t Topology) storage() jetstream.StorageType {
	if t.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// The subject prefixes of the two JetStream advisories the DLQ mover
// reads; the stream and consumer names follow as two more tokens.
const (
	AdvisoryTerminated    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"
	AdvisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
)

// advisorySubjects are the advisories of the events stream.
func advisorySubjects() []string {
	return []string{
		AdvisoryTerminated + "." + events.StreamEvents + ".*",
		AdvisoryMaxDeliveries + "." + events.StreamEvents + ".*",
	}
}

// LeaseMarkerTTL is how long the leases and manifests buckets keep the
// marker JetStream writes when a key's own TTL expires; watchers see the
// marker as a delete.
const LeaseMarkerTTL = time.Minute

// kvStreamPrefix starts the name of the stream behind a KV bucket.
const kvStreamPrefix = "KV_"

// replicas is the replica count to provision stream with: t's, or when t
// says zero, what the stream has now (1 when it does not exist). A stream
// that could not be looked up is an error, not a new stream: guessing 1
// would shrink a replicated one.
func (t Topology) replicas(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	if t.Replicas > 0 {
		return t.Replicas, nil
	}
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	if n := s.CachedInfo().Config.Replicas; n > 0 {
		return n, nil
	}
	return 1, nil
}

// Provision creates or updates every stream, bucket and consumer of t. It is
// idempotent; `stevedore up` and every service (unless told not to) call it
// at start.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) error {
	t.setDefaults()
	streams := []jetstream.StreamConfig{
		{
			Name:        events.StreamEvents,
			Description: "stevedore build events",
			Subjects:    []string{events.SubjectRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      t.EventsMaxAge,
			MaxBytes:    maxBytes(t.EventsMaxBytes),
			Duplicates:  t.Duplicates,
			Storage:     t.storage(),
		},
		{
			Name:        events.StreamAdvisories,
			Description: "terminated and max-delivered advisories of " + events.StreamEvents,
			Subjects:    advisorySubjects(),
			MaxAge:      t.DLQMaxAge,
			MaxBytes:    maxBytes(t.DLQMaxBytes),
			Storage:     t.storage(),
		},
		{
			Name:        events.StreamDLQ,
			Description: "events a stevedore consumer gave up on",
			Subjects:    []string{events.DLQSubjectRoot + ".>"},
			MaxAge:      t.DLQMaxAge,
			MaxBytes:    maxBytes(t.DLQMaxBytes),
			Duplicates:  t.Duplicates,
			Storage:     t.storage(),
		},
	}
	for _, cfg := range streams {
		n, err := t.replicas(ctx, js, cfg.Name)
		if err != nil {
			return fmt.Errorf("provision: %w", err)
		}
		cfg.Replicas = n
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("provision stream %s: %w", cfg.Name, err)
		}
	}
	buckets := []jetstream.KeyValueConfig{
		{Bucket: events.BucketCacheIndex, Description: "cache records by solver digest", History: 1},
		{Bucket: events.BucketManifests, Description: "tag resolutions and resolved manifests", History: 1, LimitMarkerTTL: LeaseMarkerTTL},
		{Bucket: events.BucketLeases, Description: "fleet-wide leases", History: 1, LimitMarkerTTL: LeaseMarkerTTL},
		{Bucket: events.BucketSnapshots, Description: "which node holds the snapshot of each chainID", History: 1},
		{Bucket: events.BucketHTTP, Description: "what each http source served: ETags, digests, Last-Modified", History: 1},
		{Bucket: events.BucketWatches, Description: "watched tags and the digest each last pointed to", History: 1},
		{Bucket: events.BucketFleet, Description: "the fleet's secrets: services only", History: 1},
	}
	for _, cfg := range buckets {
		cfg.Storage = t.storage()
		n, err := t.replicas(ctx, js, kvStreamPrefix+cfg.Bucket)
		if err != nil {
			return fmt.Errorf("provision: %w", err)
		}
		cfg.Replicas = n
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
		}
	}
	if err := provisionFleetKey(ctx, js); err != nil {
		return err
	}
	for _, c := range t.Consumers {
		if err := c.Validate(); err != nil {
			return err
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamEvents, c.config()); err != nil {
			return fmt.Errorf("provision consumer %s: %w", c.Name, err)
		}
	}
	dlq := jetstream.ConsumerConfig{
		Durable:       events.ConsumerDLQ,
		Description:   "stevedore dead-letter mover",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    10,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamAdvisories, dlq); err != nil {
		return fmt.Errorf("provision consumer %s: %w", events.ConsumerDLQ, err)
	}
	return nil
}
