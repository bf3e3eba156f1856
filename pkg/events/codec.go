package events

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	cloudevent "github.com/cloudevents/sdk-go/v2/event"
)

// Message is an encoded event, independent of any broker client: the bus
// turns it into a NATS message and back.
type Message struct {
	// Subject is the NATS subject.
	Subject string
	// Header holds the ce-* attributes, Content-Type and Nats-Msg-Id.
	Header map[string][]string
	// Data is the body: the JSON payload (binary mode) or a whole JSON
	// CloudEvent (structured mode).
	Data []byte
}

// Header names.
const (
	// HeaderPrefix starts every CloudEvents attribute header in binary mode.
	HeaderPrefix = "ce-"
	// HeaderContentType carries datacontenttype in binary mode and
	// application/cloudevents+json in structured mode.
	HeaderContentType = "Content-Type"
	// HeaderMsgID is JetStream's de-duplication header; Encode sets it to
	// the event id.
	HeaderMsgID = "Nats-Msg-Id"
	// ContentTypeJSON is the datacontenttype of every payload.
	ContentTypeJSON = "application/json"
	// ContentTypeStructured marks a structured-mode message.
	ContentTypeStructured = "application/cloudevents+json"
	// ExtCausationID is the correlation extension naming the causing event.
	ExtCausationID = "causationid"
	// ExtTraceParent is the distributed-tracing extension.
	ExtTraceParent = "traceparent"
)

// toCloudEvent builds and validates the CloudEvents form of e.
func toCloudEvent(e Event) (cloudevent.Event, []byte, error) {
	if e.Data == nil {
		return cloudevent.Event{}, nil, fmt.Errorf("event %q has no payload: %w", e.ID, ErrInvalid)
	}
	if _, ok := Lookup(e.Type()); !ok {
		return cloudevent.Event{}, nil, fmt.Errorf("%q: %w", e.Type(), ErrUnknownType)
	}
	if err := ValidateBuildID(e.BuildID); err != nil {
		return cloudevent.Event{}, nil, err
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return cloudevent.Event{}, nil, fmt.Errorf("encode %s payload: %w", e.Type(), err)
	}
	ce := cloudevent.New()
	ce.SetID(e.ID)
	ce.SetSource(e.Source)
	ce.SetType(string(e.Type()))
	ce.SetSubject(e.BuildID)
	ce.SetTime(e.Time.UTC())
	ce.SetDataContentType(ContentTypeJSON)
	if e.CausationID != "" {
		ce.SetExtension(ExtCausationID, e.CausationID)
	}
	if e.TraceParent != "" {
		ce.SetExtension(ExtTraceParent, e.TraceParent)
	}
	if err := ce.Validate(); err != nil {
		return cloudevent.Event{}, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return ce, data, nil
}

// Encode renders e in binary content mode on its build subject.
func Encode(e Event) (Message, error) {
	ce, data, err := toCloudEvent(e)
	if err != nil {
		return Message{}, err
	}
	h := map[string][]string{
		HeaderPrefix + "specversion": {ce.SpecVersion()},
		HeaderPrefix + "id":          {pctEncode(ce.ID())},
		HeaderPrefix + "source":      {pctEncode(ce.Source())},
		HeaderPrefix + "type":        {pctEncode(ce.Type())},
		HeaderPrefix + "subject":     {pctEncode(ce.Subject())},
		HeaderPrefix + "time":        {ce.Time().Format(time.RFC3339Nano)},
		HeaderContentType:            {ContentTypeJSON},
		HeaderMsgID:                  {ce.ID()},
	}
	for name, v := range ce.Extensions() {
		h[HeaderPrefix+name] = []string{pctEncode(fmt.Sprint(v))}
	}
	return Message{Subject: Subject(e.BuildID, e.Type()), Header: h, Data: data}, nil
}

// EncodeStructured renders e in structured content mode: the body is the
// whole JSON CloudEvent. Stevedore's services publish binary mode; this is
// for producers that prefer one self-contained document (and for tests).
func EncodeStructured(e Event) (Message, error) {
	ce, data, err := toCloudEvent(e)
	if err != nil {
		return Message{}, err
	}
	if err := ce.SetData(ContentTypeJSON, json.RawMessage(data)); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	body, err := json.Marshal(ce)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	h := map[string][]string{
		HeaderContentType: {ContentTypeStructured},
		HeaderMsgID:       {ce.ID()},
	}
	return Message{Subject: Subject(e.BuildID, e.Type()), Header: h, Data: body}, nil
}

// Decode parses a message in either content mode: structured when
// Content-Type starts with application/cloudevents (case-insensitive),
// binary otherwise. It checks the attributes, that the type is in the
// catalog, that the build id is a valid token (and matches the subject when
// one is given) and that the body is the type's JSON.
func Decode(m Message) (Event, error) {
	var (
		ce  cloudevent.Event
		err error
	)
	if ct := headerValue(m.Header, HeaderContentType); strings.HasPrefix(strings.ToLower(ct), "application/cloudevents") {
		ce, err = decodeStructured(m.Data)
	} else {
		ce, err = decodeBinary(m.Header, m.Data)
	}
	if err != nil {
		return Event{}, err
	}
	if err := ce.Validate(); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if ct := ce.DataContentType(); ct != "" && !strings.HasPrefix(ct, ContentTypeJSON) {
		return Event{}, fmt.Errorf("datacontenttype %q is not %s: %w", ct, ContentTypeJSON, ErrInvalid)
	}
	spec, ok := Lookup(Type(ce.Type()))
	if !ok {
		return Event{}, fmt.Errorf("%q: %w", ce.Type(), ErrUnknownType)
	}
	if err := ValidateBuildID(ce.Subject()); err != nil {
		return Event{}, err
	}
	if m.Subject != "" {
		if want := Subject(ce.Subject(), spec.Type); want != m.Subject {
			return Event{}, fmt.Errorf("event %s of build %s arrived on %q, want %q: %w", spec.Name, ce.Subject(), m.Subject, want, ErrInvalid)
		}
	}
	payload, err := spec.decodePayload(ce.Data())
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Event{
		ID:          ce.ID(),
		Source:      ce.Source(),
		BuildID:     ce.Subject(),
		Time:        ce.Time(),
		CausationID: extension(ce, ExtCausationID),
		TraceParent: extension(ce, ExtTraceParent),
		Data:        payload,
	}, nil
}

func decodeStructured(body []byte) (cloudevent.Event, error) {
	var ce cloudevent.Event
	if err := json.Unmarshal(body, &ce); err != nil {
		return cloudevent.Event{}, fmt.Errorf("structured event: %w: %w", ErrInvalid, err)
	}
	return ce, nil
}

func decodeBinary(h map[string][]string, body []byte) (cloudevent.Event, error) {
	attr := func(name string) (string, error) {
		v, err := pctDecode(headerValue(h, HeaderPrefix+name))
		if err != nil {
			return "", fmt.Errorf("header %s%s: %w: %w", HeaderPrefix, name, ErrInvalid, err)
		}
		return v, nil
	}
	sv, err := attr("specversion")
	if err != nil {
		return cloudevent.Event{}, err
	}
	if sv != "1.0" {
		return cloudevent.Event{}, fmt.Errorf("specversion %q is not 1.0: %w", sv, ErrInvalid)
	}
	ce := cloudevent.New()
	for name, set := range map[string]func(string){
		"id": ce.SetID, "source": ce.SetSource, "type": ce.SetType, "subject": ce.SetSubject,
	} {
		v, err := attr(name)
		if err != nil {
			return cloudevent.Event{}, err
		}
		set(v)
	}
	if ts, err := attr("time"); err != nil {
		return cloudevent.Event{}, err
	} else if ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return cloudevent.Event{}, fmt.Errorf("ce-time %q: %w: %w", ts, ErrInvalid, err)
		}
		ce.SetTime(t)
	}
	for _, ext := range []string{ExtCausationID, ExtTraceParent} {
		v, err := attr(ext)
		if err != nil {
			return cloudevent.Event{}, err
		}
		if v != "" {
			ce.SetExtension(ext, v)
		}
	}
	if err := ce.SetData(headerValue(h, HeaderContentType), body); err != nil {
		return cloudevent.Event{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return ce, nil
}

func extension(ce cloudevent.Event, name string) string {
	v, ok := ce.Extensions()[name]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// headerValue returns the first value of a header, matching its name
// case-insensitively (NATS headers keep the case they were sent with).
func headerValue(h map[string][]string, name string) string {
	if v, ok := h[name]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// pctEncode percent-encodes a header value as the CloudEvents NATS binding
// draft asks: space, double quote, percent and every byte outside printable
// ASCII become %XX with upper-case hex.
func pctEncode(s string) string {
	const hexdigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || c == '"' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hexdigits[c>>4])
			b.WriteByte(hexdigits[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// pctDecode reverses pctEncode and rejects values that are not UTF-8.
func pctDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		if !utf8.ValidString(s) {
			return "", fmt.Errorf("not UTF-8")
		}
		return s, nil
	}
	v, err := url.PathUnescape(s)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(v) {
		return "", fmt.Errorf("not UTF-8 after percent-decoding")
	}
	return v, nil
}
