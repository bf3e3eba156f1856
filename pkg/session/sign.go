package session

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// HeaderSignature is the header that, on an answer of a keyed session
// (see Key), holds the session key's signature (nkeys, ed25519; base64url
// without padding) of the answer and the request it answers: the request's subject, its reply
// subject (unique to the request, so an answer cannot be replayed), a
// digest of its body, and the answer's headers and body.
const HeaderSignature = "Stevedore-Session-Signature"

// Key is a session's signing key. A keyed session's id is the key's public
// key (nkeys "U…"), and it signs every answer; a reader that asks a
// session whose id is such a key accepts only answers signed by it
// (IsKeyID), so no other client, although it may subscribe to every
// session's subjects, can answer in its place: not a layout's blobs, not a
// directory's listing or files, not a secret. The zero Key is no key: an
// unkeyed session's answers are not authenticated.
type Key struct {
	// ID is the session id the key serves: its public key.
	ID string
	kp nkeys.KeyPair
	// box is the session's curve key pair, which requests are sealed to
	// (OpKey); boxPub is its public key.
	box    nkeys.KeyPair
	boxPub string
}

// NewKey makes a session key, for a session whose id is Key.ID.
func NewKey() (Key, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Key{}, fmt.Errorf("session key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return Key{}, fmt.Errorf("session key: %w", err)
	}
	box, boxPub, err := newSealKey()
	if err != nil {
		return Key{}, fmt.Errorf("session key: %w", err)
	}
	return Key{ID: pub, kp: kp, box: box, boxPub: boxPub}, nil
}

// IsKeyID reports whether id is a session key's public key: the id of a
// keyed session, whose answers a reader verifies.
func IsKeyID(id string) bool { return nkeys.IsValidPublicUserKey(id) }

// signed is what an answer's signature covers.
func signed(req *nats.Msg, reply *nats.Msg) []byte {
	h := sha256.New()
	h.Write([]byte("stevedore-session-answer\x00"))
	h.Write([]byte(req.Subject + "\x00" + req.Reply + "\x00"))
	body := sha256.Sum256(req.Data)
	h.Write(body[:])
	keys := make([]string, 0, len(reply.Header))
	for k := range reply.Header {
		if k != HeaderSignature {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range reply.Header[k] {
			h.Write([]byte(k + "\x00" + v + "\x00"))
		}
	}
	h.Write([]byte{0xff})
	h.Write(reply.Data)
	return h.Sum(nil)
}

// sign adds the key's signature to reply, the answer to req.
func (k Key) sign(req, reply *nats.Msg) error {
	sig, err := k.kp.Sign(signed(req, reply))
	if err != nil {
		return fmt.Errorf("sign answer: %w", err)
	}
	if reply.Header == nil {
		reply.Header = nats.Header{}
	}
	reply.Header.Set(HeaderSignature, base64.RawURLEncoding.EncodeToString(sig))
	return nil
}

// verify reports whether reply carries the signature of session id's key
// over the answer to req.
func verify(id string, req, reply *nats.Msg) bool {
	sig, err := base64.RawURLEncoding.DecodeString(reply.Header.Get(HeaderSignature))
	if err != nil || len(sig) == 0 {
		return false
	}
	pub, err := nkeys.FromPublicKey(id)
	if err != nil {
		return false
	}
	return pub.Verify(signed(req, reply), sig) == nil
}

// requestSigned sends req to keyed session id and returns the first answer
// the session's key signed; answers anyone else sends are dropped. It
// waits until ctx ends.
func requestSigned(ctx context.Context, nc *nats.Conn, id string, req *nats.Msg) (*nats.Msg, error) {
	req.Reply = nc.NewInbox()
	sub, err := nc.SubscribeSync(req.Reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishMsg(req); err != nil {
		return nil, err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return nil, cause
			}
			return nil, err
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		if verify(id, req, m) {
			return m, nil
		}
	}
}

// SignAnswer signs reply, the answer to req, as session k: for a process
// that answers k's session otherwise than through Serve (a relay of
// another session, a proxy).
func (k Key) SignAnswer(req, reply *nats.Msg) error { return k.sign(req, reply) }
