package lineage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Bucket is the KV store the sightings live in (lease.Flight over
// events.BucketManifests, shared by the pullers).
type Bucket interface {
	// Get returns the value under key; found is false when there is none.
	Get(ctx context.Context, key string) (value []byte, found bool, err error)
	// Update stores what change makes of key's value, with
	// compare-and-set.
	Update(ctx context.Context, key string, change func(old []byte, found bool) ([]byte, error)) error
}

// Store keeps the recent sightings of each source identity.
type Store struct {
	bucket Bucket
}

// NewStore returns a Store over bucket.
func NewStore(bucket Bucket) *Store { return &Store{bucket: bucket} }

// Key is the bucket key of an identity's sightings: "lineage." and the
// sha256 of the identity (KV keys cannot hold every character a name
// can).
func Key(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return "lineage." + hex.EncodeToString(sum[:])
}

// Recent returns the sightings of identity, newest first; none when the
// fleet has made no record of it. An unreadable value reads as none.
//
// Errors: the bucket's.
func (s *Store) Recent(ctx context.Context, identity string) ([]events.Sighting, error) {
	v, found, err := s.bucket.Get(ctx, Key(identity))
	if err != nil {
		return nil, fmt.Errorf("lineage of %s: %w", identity, err)
	}
	if !found {
		return nil, nil
	}
	var out []events.Sighting
	if json.Unmarshal(v, &out) != nil {
		return nil, nil
	}
	return out, nil
}

// Add records a sighting of identity (see Remember).
//
// Errors: the bucket's (lease.ErrContended among them).
func (s *Store) Add(ctx context.Context, identity string, sighting events.Sighting) error {
	sighting.SeenAt = seenAt(sighting.SeenAt)
	err := s.bucket.Update(ctx, Key(identity), func(old []byte, found bool) ([]byte, error) {
		var recent []events.Sighting
		if found {
			_ = json.Unmarshal(old, &recent) // an unreadable lineage is none
		}
		return json.Marshal(Remember(recent, sighting))
	})
	if err != nil {
		return fmt.Errorf("lineage of %s: %w", identity, err)
	}
	return nil
}
