package bus_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
)

// What a cluster says while it cannot answer is transient; what says the
// request is wrong is not, however it is wrapped.
func TestTransient(t *testing.T) {
	t.Parallel()
	api := func(code jetstream.ErrorCode) error {
		return &jetstream.APIError{Code: 503, ErrorCode: code, Description: "x"}
	}
	for err, want := range map[error]bool{
		context.DeadlineExceeded:         true,
		nats.ErrTimeout:                  true,
		nats.ErrNoResponders:             true,
		jetstream.ErrJetStreamNotEnabled: true,
		api(10008):                       true, // JetStream system temporarily unavailable
		api(10009):                       true, // cluster can not handle request
		api(10005):                       true, // no suitable peers for placement
		jetstream.ErrJetStreamNotEnabledForAccount: false,
		jetstream.ErrBucketNotFound:                false,
		jetstream.ErrBadBucket:                     false,
		jetstream.ErrConsumerNotFound:              false,
		jetstream.ErrStreamNameAlreadyInUse:        false,
		nats.ErrPermissionViolation:                false,
		context.Canceled:                           false,
	} {
		if got := bus.Transient(fmt.Errorf("lease: bucket x: %w", err)); got != want {
			t.Errorf("Transient(%v) = %v, want %v", err, got, want)
		}
	}
	if bus.Transient(nil) {
		t.Error("Transient(nil) = true")
	}
}
