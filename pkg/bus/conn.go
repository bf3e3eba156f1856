package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect dials a NATS server for a long-running service: it retries the
// first connection and reconnects forever afterwards, since the fleet must
// outlive a NATS restart. name identifies the client in the server's
// connection list.
func Connect(url, name string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts = append([]nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(InboxPrefix(UserOf(url))),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", redacted(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// DefaultUser is the NATS user of a connection whose URL names none: the
// server's no_auth_user in deploy/nats.conf.
const DefaultUser = "client"

// UserOf is the user the first server URL of url names, or DefaultUser.
func UserOf(url string) string {
	first, _, _ := strings.Cut(url, ",")
	if u, err := neturl.Parse(strings.TrimSpace(first)); err == nil && u.User != nil && u.User.Username() != "" {
		return u.User.Username()
	}
	return DefaultUser
}

// InboxPrefix is the prefix of the reply subjects of user's connections:
// "_INBOX_<user>" (a user name that is not a plain subject token is
// hashed). deploy/nats.conf lets each user subscribe to its own prefix
// only, so no other user reads the replies it gets: API answers, publish
// acknowledgements, the messages its consumers deliver (whose ack subjects
// would let the reader ack, nak or terminate them), and its client
// sessions' answers (layer bytes, files). Users share a prefix only with
// connections of the same user.
func InboxPrefix(user string) string {
	if !plainToken(user) {
		sum := sha256.Sum256([]byte(user))
		user = hex.EncodeToString(sum[:8])
	}
	return "_INBOX_" + user
}

func plainToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// redacted is a server URL (or a comma-separated list of them) without
// passwords, for messages.
func redacted(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// ConnectOnce dials a NATS server for a short-lived client (the CLI): it
// keeps trying for up to wait (a server may be starting), then gives up
// instead of retrying forever, and does not reconnect.
func ConnectOnce(url, name string, wait time.Duration, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts = append([]nats.Option{nats.Name(name), nats.CustomInboxPrefix(InboxPrefix(UserOf(url))), nats.Timeout(2 * time.Second), nats.NoReconnect()}, opts...)
	deadline := time.Now().Add(wait)
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, nil, fmt.Errorf("jetstream: %w", err)
			}
			return nc, js, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("connect to %s: %w", redacted(url), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
