package bus

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// fleetKeyName is the key of BucketFleet that holds the fleet key.
const fleetKeyName = "reissue"

// fleetKeySize is the fleet key's length in bytes.
const fleetKeySize = 32

// provisionFleetKey makes the fleet key, random, unless the bucket holds
// one: every provisioner tries, the first one's stays.
func provisionFleetKey(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, events.BucketFleet)
	if err != nil {
		return fmt.Errorf("provision the fleet key: %w", err)
	}
	key := make([]byte, fleetKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("provision the fleet key: %w", err)
	}
	if _, err := kv.Create(ctx, fleetKeyName, key); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("provision the fleet key: %w", err)
	}
	return nil
}

// FleetKey reads the fleet key, the secret the services make the fallback
// ids of their events with (ReissueID). Provision makes it; only the
// services' users may read it (deploy/nats.conf).
func FleetKey(ctx context.Context, js jetstream.JetStream) ([]byte, error) {
	kv, err := js.KeyValue(ctx, events.BucketFleet)
	if err != nil {
		return nil, fmt.Errorf("the fleet key: %w", err)
	}
	e, err := kv.Get(ctx, fleetKeyName)
	if err != nil {
		return nil, fmt.Errorf("the fleet key: %w", err)
	}
	if len(e.Value()) < fleetKeySize {
		return nil, fmt.Errorf("the fleet key: %d bytes, want %d", len(e.Value()), fleetKeySize)
	}
	return e.Value(), nil
}

// ReissueID is the id an event with id id and type t gets when its id is
// held by another message (see WithDerivedIDs): an HMAC with the fleet key
// (FleetKey), so every replica walks the same chain and no client, which
// cannot read the key, can compute it to pre-publish it.
func ReissueID(key []byte, id string, t events.Type) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("stevedore-reissue\x00" + id + "\x00" + string(t)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
