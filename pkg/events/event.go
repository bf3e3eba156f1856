package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Event is the envelope of every message: CloudEvents attributes plus a
// typed payload.
type Event struct {
	// ID is the CloudEvents id, also sent as Nats-Msg-Id. Unique per build;
	// deterministic for derived events (see DeriveID).
	ID string
	// Source is the CloudEvents source: the component instance that emitted
	// the event, e.g. "/stevedore/puller/host-1".
	Source string
	// BuildID is the CloudEvents subject: the build the event belongs to.
	BuildID string
	// Time is when the event was emitted.
	Time time.Time
	// CausationID is the id of the event this one was derived from (the
	// causationid extension); empty for the event that starts a build.
	CausationID string
	// TraceParent is the W3C traceparent of the request that started the
	// build (the traceparent extension); set once at the origin and copied
	// to every derived event.
	TraceParent string
	// Data is the payload; its type decides the CloudEvents type.
	Data Payload
}

// New wraps a payload in an envelope whose other fields the bus runtime
// fills in when it publishes: handlers return New(payload).
func New(p Payload) Event { return Event{Data: p} }

// Type is the CloudEvents type of the event, from its payload.
func (e Event) Type() Type {
	if e.Data == nil {
		return ""
	}
	return e.Data.EventType()
}

// DeriveID returns the id of the n-th event of type t derived from the
// event with id cause. It is a pure function of its inputs, so reprocessing
// a redelivered input emits the same ids and the stream drops the copies.
func DeriveID(cause string, t Type, n int) string {
	h := sha256.New()
	h.Write([]byte(cause))
	h.Write([]byte{0})
	h.Write([]byte(t))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(n)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Derive fills in the envelope of out as an event caused by in: same build,
// same trace, a derived id (n counts earlier outputs of the same type), the
// given source and time.
func Derive(in Event, out Event, n int, source string, now time.Time) Event {
	out.ID = DeriveID(in.ID, out.Type(), n)
	out.BuildID = in.BuildID
	out.CausationID = in.ID
	out.TraceParent = in.TraceParent
	out.Source = source
	out.Time = now
	return out
}
