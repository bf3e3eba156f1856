package session

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/nats-io/nkeys"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// A request that names a client session (a build's Session, a source's
// oci.session or local.session, a cache request's Session) makes the fleet
// read or write what that session serves. Build ids and session ids are in
// the events stream, which every client reads, so naming a session proves
// nothing: a client could publish a request of its own on another build's
// subject, naming that build's session, and the session (which serves that
// build) would answer. So a request carries, for each session it names,
// the signature of that session's key (Key: a keyed session's id is its
// public key, so the verifier needs nothing the attacker could give it),
// over the request's build, id, type and payload. The service that first
// acts on a request (the resolver, the exporter) checks them with
// VerifyRequest and refuses the request otherwise.

// held are the keys of the keyed sessions this process serves, by id:
// SignRequest signs with them, so a client that serves a session and then
// publishes a request naming it signs it without passing the key along.
var held sync.Map // string -> Key

// RequestSessions returns the client sessions request p names, sorted,
// without repeats; nil for a payload that is not a client's request or
// names none.
func RequestSessions(p events.Payload) []string {
	var ids []string
	switch r := p.(type) {
	case events.SourceResolveRequested:
		ids = source.SessionsNamed(r.Source)
		if r.Session != "" {
			ids = append(ids, r.Session)
		}
	case events.CacheExportRequested:
		if r.Session != "" {
			ids = append(ids, r.Session)
		}
	case events.CacheImportRequested:
		if r.Session != "" {
			ids = append(ids, r.Session)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// signatures returns p's Signatures and p without them.
func signatures(p events.Payload) (map[string]string, events.Payload) {
	switch r := p.(type) {
	case events.SourceResolveRequested:
		s := r.Signatures
		r.Signatures = nil
		return s, r
	case events.CacheExportRequested:
		s := r.Signatures
		r.Signatures = nil
		return s, r
	case events.CacheImportRequested:
		s := r.Signatures
		r.Signatures = nil
		return s, r
	}
	return nil, p
}

// withSignatures returns p with Signatures set to sigs.
func withSignatures(p events.Payload, sigs map[string]string) events.Payload {
	switch r := p.(type) {
	case events.SourceResolveRequested:
		r.Signatures = sigs
		return r
	case events.CacheExportRequested:
		r.Signatures = sigs
		return r
	case events.CacheImportRequested:
		r.Signatures = sigs
		return r
	}
	return p
}

// signedRequest is what a request's signatures cover: its build, its id,
// its type and its payload without the signatures (JSON, which encodes a
// struct's fields in order and a map's keys sorted, so the verifier's
// encoding of the decoded payload is the signer's).
func signedRequest(e events.Event) ([]byte, error) {
	_, bare := signatures(e.Data)
	body, err := json.Marshal(bare)
	if err != nil {
		return nil, fmt.Errorf("encode request %s: %w", e.ID, err)
	}
	h := sha256.New()
	h.Write([]byte("stevedore-session-request\x00"))
	h.Write([]byte(e.BuildID + "\x00" + e.ID + "\x00" + string(e.Type()) + "\x00"))
	h.Write(body)
	return h.Sum(nil), nil
}

// SignRequest signs e, with its envelope (build, id) set, with the key of
// session k for the session it names: the signature goes into the
// payload's Signatures under k.ID. Other signatures are kept.
func (k Key) SignRequest(e *events.Event) error {
	if k.kp == nil {
		return fmt.Errorf("sign request %s: no session key", e.ID)
	}
	msg, err := signedRequest(*e)
	if err != nil {
		return err
	}
	sig, err := k.kp.Sign(msg)
	if err != nil {
		return fmt.Errorf("sign request %s: %w", e.ID, err)
	}
	sigs, _ := signatures(e.Data)
	sigs = maps.Clone(sigs)
	if sigs == nil {
		sigs = map[string]string{}
	}
	sigs[k.ID] = base64.RawURLEncoding.EncodeToString(sig)
	e.Data = withSignatures(e.Data, sigs)
	return nil
}

// SignRequest signs e (its envelope set) for every session it names, with
// the keys of the keyed sessions this process serves (Serve, Hold). A
// session this process does not hold a key of cannot sign: e is signed by
// the others, and the error is failure.ErrInvalid, naming the first such session;
// the fleet would refuse the request.
func SignRequest(e *events.Event) error {
	var missing []string
	for _, id := range RequestSessions(e.Data) {
		k, ok := held.Load(id)
		if !ok {
			missing = append(missing, id)
			continue
		}
		if err := k.(Key).SignRequest(e); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return errorf(CodeInvalid, fmt.Sprintf("the request names session %s, which this client does not serve with a key: only the client that holds a session may name it", missing[0]))
	}
	return nil
}

// VerifyRequest checks that every session e names signed it (see
// SignRequest): an id that is not a session key cannot sign, so a request
// naming one fails too. The error is failure.ErrInvalid: the request is refused
// for good.
func VerifyRequest(e events.Event) error {
	ids := RequestSessions(e.Data)
	if len(ids) == 0 {
		return nil
	}
	sigs, _ := signatures(e.Data)
	msg, err := signedRequest(e)
	if err != nil {
		return errorf(CodeInvalid, err.Error())
	}
	for _, id := range ids {
		if !verifyRequestSig(id, msg, sigs[id]) {
			return errorf(CodeInvalid, fmt.Sprintf("the request names session %s and is not signed by its key: only the client that holds a session may name it", id))
		}
	}
	return nil
}

func verifyRequestSig(id string, msg []byte, sig string) bool {
	if !IsKeyID(id) || sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	pub, err := nkeys.FromPublicKey(id)
	if err != nil {
		return false
	}
	return pub.Verify(msg, raw) == nil
}

// VerifyInput is VerifyRequest of the event a bus handler is handling
// (events.Input), whose payload is p. A p that names no session needs no
// envelope; one that does and has none cannot be checked, and is refused.
func VerifyInput(ctx context.Context, p events.Payload) error {
	if len(RequestSessions(p)) == 0 {
		return nil
	}
	e, ok := events.Input(ctx)
	if !ok {
		return errorf(CodeInvalid, "the request names a session and its envelope is unknown: its signature cannot be checked")
	}
	return VerifyRequest(e)
}

// Hold makes SignRequest sign with k until release is called: for a
// process that serves session k.ID otherwise than through Serve (a relay
// of another session, a proxy); Serve holds a keyed session's key itself.
func Hold(k Key) (release func()) {
	held.Store(k.ID, k)
	return func() { held.CompareAndDelete(k.ID, k) }
}
