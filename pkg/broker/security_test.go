package broker_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/broker"
)

// Finding 5: an embedded server with a password admits only who holds it;
// its own in-process connections still work.
func TestSecurityPasswordRequired(t *testing.T) {
	t.Parallel()
	srv, err := broker.Start(broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort, Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	if nc, err := nats.Connect(srv.ClientURL()); err == nil {
		nc.Close()
		t.Error("a connection without credentials was admitted")
	}
	if nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(broker.DefaultUser, "wrong")); err == nil {
		nc.Close()
		t.Error("a connection with a wrong password was admitted")
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(broker.DefaultUser, "s3cret"))
	if err != nil {
		t.Fatalf("the password was refused: %v", err)
	}
	nc.Close()
	in, err := srv.Connect("in-process")
	if err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
	in.Close()
}
