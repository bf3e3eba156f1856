package resolver_test

import (
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

// Finding 6: the streams' byte bounds are the operator's to set. A service
// that provisions gives the events, dead-letter and advisories streams the
// bounds of its configuration (-events-max-bytes, -dlq-max-bytes).
func TestSecurityStreamBoundsConfigured(t *testing.T) {
	t.Parallel()
	js := unprovisioned(t)
	cfg := resolver.Config{Replica: service.Replica{Instance: instance, Logger: discard, Provision: true, EventsMaxBytes: 3 << 20, DLQMaxBytes: 5 << 20}, Platform: linuxAMD64}
	runService(t, js, cfg)
	// Provisioning is done once every consumer exists.
	for _, c := range []string{events.ConsumerResolver, events.ConsumerPuller, events.ConsumerSnapshotter, events.ConsumerExporter} {
		waitConsumer(t, js, c)
	}
	deadline := time.Now().Add(waitFor)
	for {
		if _, err := js.Consumer(t.Context(), events.StreamAdvisories, events.ConsumerDLQ); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: not there after %s", events.ConsumerDLQ, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, want := range map[string]int64{events.StreamEvents: 3 << 20, events.StreamDLQ: 5 << 20, events.StreamAdvisories: 5 << 20} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.MaxBytes; got != want {
			t.Errorf("stream %s: MaxBytes %d, want %d", name, got, want)
		}
	}
}
