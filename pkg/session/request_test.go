package session_test

import (
	"errors"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/failure"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// A request's signatures cover its build, its id and every field of its
// payload: a copy moved to another build, given another id or changed in
// any field no longer verifies, nor does one that names a second session
// that did not sign.
func TestSecurityRequestSignatures(t *testing.T) {
	t.Parallel()
	k, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	signed := events.New(events.CacheExportRequested{Target: "type=local,dest=/x", Build: "b1", Session: k.ID, Store: "cache"})
	signed.ID, signed.BuildID = "b1-export", "b1"
	if err := k.SignRequest(&signed); err != nil {
		t.Fatal(err)
	}
	if err := session.VerifyRequest(signed); err != nil {
		t.Fatalf("the session's own signature: %v", err)
	}
	export := func(e events.Event, change func(*events.CacheExportRequested)) events.Event {
		p := e.Data.(events.CacheExportRequested)
		change(&p)
		e.Data = p
		return e
	}
	bad := map[string]events.Event{
		"unsigned":       export(signed, func(p *events.CacheExportRequested) { p.Signatures = nil }),
		"another target": export(signed, func(p *events.CacheExportRequested) { p.Target = "type=local,dest=/y" }),
		"another store":  export(signed, func(p *events.CacheExportRequested) { p.Store = "other" }),
		"another build":  func() events.Event { e := signed; e.BuildID = "b2"; return e }(),
		"another id":     func() events.Event { e := signed; e.ID = "b1-again"; return e }(),
		"garbage":        export(signed, func(p *events.CacheExportRequested) { p.Signatures = map[string]string{k.ID: "AAAA"} }),
		"not a key":      export(signed, func(p *events.CacheExportRequested) { p.Session = "s1" }),
	}
	// A pull naming its build session (signed) and another's layout
	// session (not signed).
	two := events.New(events.SourceResolveRequested{
		Source:  events.SourceOp{Identifier: "oci-layout://localhost/app@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Attrs: map[string]string{source.AttrOCILayoutSessionID: other.ID}},
		Session: k.ID,
	})
	two.ID, two.BuildID = "b1-request", "b1"
	if err := k.SignRequest(&two); err != nil {
		t.Fatal(err)
	}
	bad["a second session unsigned"] = two
	// Another key's signature under the session's id.
	forged := signed
	if err := other.SignRequest(&forged); err != nil {
		t.Fatal(err)
	}
	bad["another key"] = export(forged, func(p *events.CacheExportRequested) {
		p.Signatures = map[string]string{k.ID: p.Signatures[other.ID]}
	})
	for name, e := range bad {
		if err := session.VerifyRequest(e); err == nil || !errors.Is(err, failure.ErrInvalid) {
			t.Errorf("%s: VerifyRequest = %v, want ErrInvalid", name, err)
		}
	}
	if err := other.SignRequest(&two); err != nil {
		t.Fatal(err)
	}
	if err := session.VerifyRequest(two); err != nil {
		t.Errorf("signed by both sessions it names: %v", err)
	}
	if got := session.RequestSessions(two.Data); len(got) != 2 {
		t.Errorf("RequestSessions = %v, want both sessions", got)
	}
}
