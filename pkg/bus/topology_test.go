package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/broker/brokertest"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// A service provisioning with the default topology (Replicas zero) keeps
// the replicas an operator gave the streams and buckets of a cluster.
//
// Not parallel: the cluster runs alone, not next to the tests that count
// redeliveries under short AckWaits.
func TestProvisionKeepsReplicas(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	nc, err := nats.Connect(c.ClientURLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeoutCause(t.Context(), 60*time.Second, errors.New("provisioning took over a minute"))
	defer cancel()
	if err := bus.Provision(ctx, js, bus.Topology{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamEvents, events.StreamAdvisories, events.StreamDLQ, "KV_" + events.BucketCacheIndex, "KV_" + events.BucketLeases} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().Config.Replicas; n != 3 {
			t.Errorf("%s has %d replicas after a default provision, want 3", name, n)
		}
	}
}
