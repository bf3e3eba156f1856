package session

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// OpKey asks a keyed session for its sealing key:
// stevedore.session.<id>.key. The request body is ignored; the reply's
// body is the session's public curve key ("X…", nkeys), and the reply is
// signed with the session's key like every answer, so the asker knows the
// sealing key is the session's.
//
// Every other request to a keyed session has its body sealed to that key,
// and its HeaderSealedBy names the requester's curve key: every client
// may subscribe to every session's subjects (to serve its own), so a
// request in the clear would show it the blobs the exporter writes into
// another client's cache, the directories and paths the snapshotter asks
// for, the digests of the layers read. Sealed, only the session reads
// them. A keyed session refuses a request that is not sealed to it.
const OpKey = "key"

// HeaderSealedBy is the header holding the public curve key ("X…", nkeys)
// of whoever sealed the body: on a request to a keyed session (see OpKey),
// the requester; on a sealed answer (a secret, pkg/session/secret), the
// session.
const HeaderSealedBy = "Stevedore-Sealed-By"

// maxSealKeys bounds the sealing keys a Client remembers; past it, it
// forgets them all and asks again.
const maxSealKeys = 4096

// newSealKey makes a session's curve key pair.
func newSealKey() (nkeys.KeyPair, string, error) {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, "", err
	}
	return kp, pub, nil
}

// SealKey is the session's public curve key: what OpKey answers.
func (k Key) SealKey() string { return k.boxPub }

// OpenRequest returns the body of m, a request to k's session, opened:
// for a process that answers k's session otherwise than through Serve.
//
// Errors: failure.ErrInvalid for a request that is not sealed to k.
func (k Key) OpenRequest(m *nats.Msg) ([]byte, error) {
	from := m.Header.Get(HeaderSealedBy)
	if k.box == nil || !nkeys.IsValidPublicCurveKey(from) {
		return nil, errorf(CodeInvalid, fmt.Sprintf("session %s: the request is not sealed to the session's key", k.ID))
	}
	body, err := k.box.Open(m.Data, from)
	if err != nil {
		return nil, errorf(CodeInvalid, fmt.Sprintf("session %s: the request does not open with the session's key: %v", k.ID, err))
	}
	return body, nil
}

// KeyAnswer is k's answer to an OpKey request (unsigned: sign it with
// SignAnswer).
func (k Key) KeyAnswer() *nats.Msg { return sizeReply(0, []byte(k.boxPub)) }

// sealKeys remembers the sealing keys of the sessions a Client asked.
type sealKeys struct {
	mu   sync.Mutex
	keys map[string]string
}

// sealKey returns keyed session id's sealing key, asked of it once.
func (c *Client) sealKey(ctx context.Context, id string) (string, error) {
	c.seals.mu.Lock()
	pub, ok := c.seals.keys[id]
	c.seals.mu.Unlock()
	if ok {
		return pub, nil
	}
	m, err := c.send(ctx, id, OpKey, nil)
	if err != nil {
		return "", err
	}
	pub = string(m.Data)
	if !nkeys.IsValidPublicCurveKey(pub) {
		return "", errorf(CodeInvalid, fmt.Sprintf("session %s: its sealing key %q is not a public curve key", id, pub))
	}
	c.seals.mu.Lock()
	if c.seals.keys == nil || len(c.seals.keys) >= maxSealKeys {
		c.seals.keys = map[string]string{}
	}
	c.seals.keys[id] = pub
	c.seals.mu.Unlock()
	return pub, nil
}
