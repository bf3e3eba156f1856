package bus_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Finding 2, at the publisher: a message a client published first under
// the id of a service's event (on a subject a client may publish to) does
// not make the event get dropped; the event is stored under its reissued
// id, and publishing it again (an input processed twice) still stores it
// once.
func TestSecurityPreemptedIDIsReissued(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	const id = "derived-1"
	m := nats.NewMsg(events.Subject("attacker", events.TypeSourceResolveRequested))
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Data = []byte("{}")
	if _, err := env.JS.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	e := events.Event{ID: id, BuildID: "victim", Source: "/stevedore/resolver/r1", Time: time.Now(), CausationID: "victim-request",
		Data: events.SourceResolved{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}}}
	pub := bus.NewPublisher(env.JS, bus.WithDerivedIDs())
	for range 2 {
		e.Time = time.Now() // a second processing stamps another time
		if err := pub.Publish(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(events.BuildFilter("victim")))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[events.Subject("victim", events.TypeSourceResolved)]; n != 1 {
		t.Fatalf("%d copies of the service's event stored, want 1", n)
	}
	stored, err := stream.GetLastMsgForSubject(t.Context(), events.Subject("victim", events.TypeSourceResolved))
	if err != nil {
		t.Fatal(err)
	}
	key, err := bus.FleetKey(t.Context(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stored.Header.Get(jetstream.MsgIDHeader), bus.ReissueID(key, id, events.TypeSourceResolved); got != want {
		t.Errorf("stored under id %s, want the reissued %s", got, want)
	}
}

// A client's event whose id the stream holds already is refused with
// ErrDuplicateID; a service's own earlier copy is not an error.
func TestSecurityClientDuplicateRefused(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	e := events.Event{ID: "b-request", BuildID: "b", Source: "/stevedore/client/h", Time: time.Now(),
		Data: events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}}}
	if err := bus.NewPublisher(env.JS).Publish(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	if err := bus.NewPublisher(env.JS).Publish(t.Context(), e); !errors.Is(err, bus.ErrDuplicateID) {
		t.Errorf("second publish of one client event id: %v, want ErrDuplicateID", err)
	}
}

// Finding 6: the events, advisories and dead-letter streams have a byte
// bound, so no client fills the server's store with requests; the bound is
// configurable.
func TestSecurityStreamsHaveByteLimits(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	want := map[string]int64{events.StreamEvents: bus.DefaultEventsMaxBytes, events.StreamDLQ: bus.DefaultDLQMaxBytes, events.StreamAdvisories: bus.DefaultDLQMaxBytes}
	for name, n := range want {
		s, err := env.JS.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.MaxBytes; got != n {
			t.Errorf("stream %s: MaxBytes %d, want %d", name, got, n)
		}
	}
	if err := bus.Provision(t.Context(), env.JS, bus.Topology{EventsMaxBytes: 1 << 20, DLQMaxBytes: -1}); err != nil {
		t.Fatal(err)
	}
	s, err := env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxBytes; got != 1<<20 {
		t.Errorf("configured events bound: MaxBytes %d", got)
	}
}

// Finding 2, the fallback chain: a client that knows a service event's id
// also pre-publishes every fallback id it can compute, as deep as it
// likes. The fallback ids must be unknown to it: the event is stored under
// its first fallback id, after one lookup, not after one per forged
// message.
func TestSecurityReissueChainUnpredictable(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	const id = "derived-chain"
	forged := map[string]bool{}
	next := id
	for range 50 {
		forged[next] = true
		m := nats.NewMsg(events.Subject("attacker", events.TypeSourceResolveRequested))
		m.Header.Set(jetstream.MsgIDHeader, next)
		m.Data = []byte("{}")
		if _, err := env.JS.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		// What a client can compute: the chain from public inputs.
		next = events.DeriveID(next, events.TypeSourceResolved, -1)
	}
	e := events.Event{ID: id, BuildID: "victim", Source: "/stevedore/resolver/r1", Time: time.Now(), CausationID: "victim-request",
		Data: events.SourceResolved{Source: events.SourceOp{Identifier: "docker-image://x/y:1"}}}
	if err := bus.NewPublisher(env.JS, bus.WithDerivedIDs()).Publish(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	stream, err := env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := stream.GetLastMsgForSubject(t.Context(), events.Subject("victim", events.TypeSourceResolved))
	if err != nil {
		t.Fatal(err)
	}
	key, err := bus.FleetKey(t.Context(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	got := stored.Header.Get(jetstream.MsgIDHeader)
	if want := bus.ReissueID(key, id, events.TypeSourceResolved); got != want || forged[got] {
		t.Errorf("stored under id %s, want the first fallback %s, unknown to the client", got, want)
	}
	// Provisioning again (another replica starting) keeps the key, so
	// every replica walks the same chain.
	if err := bus.Provision(t.Context(), env.JS, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	if again, err := bus.FleetKey(t.Context(), env.JS); err != nil || !bytes.Equal(again, key) {
		t.Errorf("after provisioning again the fleet key is %x, %v; want %x", again, err, key)
	}
}
