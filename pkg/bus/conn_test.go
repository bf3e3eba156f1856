package bus_test

import (
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/bus"
)

// A connection error names the server but never its password.
func TestConnectErrorHidesPassword(t *testing.T) {
	t.Parallel()
	_, _, err := bus.ConnectOnce("nats://watcher:s3cretpw@127.0.0.1:1,nats://other:pw2@127.0.0.1:2", "test", 0)
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if strings.Contains(err.Error(), "s3cretpw") || strings.Contains(err.Error(), "pw2") {
		t.Errorf("error shows a password: %v", err)
	}
	if !strings.Contains(err.Error(), "watcher:xxxxx@127.0.0.1:1") {
		t.Errorf("error does not name the server: %v", err)
	}
}
