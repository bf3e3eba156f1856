package bus

import (
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
	opts = append([]nats.Option{nats.Name(name), nats.Timeout(2 * time.Second), nats.NoReconnect()}, opts...)
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
