// Package cacheindex is the fleet's cache index: cache records in a
// JetStream KV bucket, keyed by record digest.
//
// Vocabulary: a record (events.CacheRecord) is a snapshot result and where
// it lives. Its Digests are the solver digests (sha256("buildkit.source.v0:"
// + key)) of the keys it was computed for; the index stores it once per
// digest under the record digest of that key,
// cachefmt.RecordDigest(solver digest, 0) = sha256("<solver digest>@0"),
// which is the digest BuildKit gives the key's record in an exported
// cache. So a record imported from a cache, known only by its record
// digest, is found by the same lookup as one a snapshotter made. The
// puller reads the index; the snapshotter and the cache importer write it;
// the exporter reads it.
package cacheindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// ErrNoDigests is returned by Put for a record that names no digest.
var ErrNoDigests = errors.New("cache record has no digests")

// Index reads and writes cache records.
type Index struct {
	kv jetstream.KeyValue
}

// Open binds to the cache index bucket (events.BucketCacheIndex).
func Open(ctx context.Context, js jetstream.JetStream) (*Index, error) {
	kv, err := js.KeyValue(ctx, events.BucketCacheIndex)
	if err != nil {
		return nil, fmt.Errorf("cache index: %w", err)
	}
	return &Index{kv: kv}, nil
}

// Key is the KV key of a solver digest: "<algorithm>.<hex>".
func Key(d digest.Digest) string {
	return strings.Replace(d.String(), ":", ".", 1)
}

// Get returns the record of the key whose solver digest is d; found is
// false when there is none.
func (i *Index) Get(ctx context.Context, d digest.Digest) (rec events.CacheRecord, found bool, err error) {
	if err := d.Validate(); err != nil {
		return rec, false, fmt.Errorf("cache index: %w", err)
	}
	return i.GetRecord(ctx, cachefmt.RecordDigest(d, 0))
}

// GetRecord returns the record stored under record digest d; found is
// false when there is none.
func (i *Index) GetRecord(ctx context.Context, d digest.Digest) (rec events.CacheRecord, found bool, err error) {
	if err := d.Validate(); err != nil {
		return rec, false, fmt.Errorf("cache index: %w", err)
	}
	e, err := i.kv.Get(ctx, Key(d))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("cache index get %s: %w", d, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, false, fmt.Errorf("cache index %s: corrupt record: %w", d, err)
	}
	return rec, true, nil
}

// Put stores rec under the record digest of each of its Digests.
func (i *Index) Put(ctx context.Context, rec events.CacheRecord) error {
	if len(rec.Digests) == 0 {
		return ErrNoDigests
	}
	for _, d := range rec.Digests {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("cache index: %w", err)
		}
		if err := i.PutRecord(ctx, cachefmt.RecordDigest(d, 0), rec); err != nil {
			return err
		}
	}
	return nil
}

// PutRecord stores rec under record digest r (an imported record, whose
// solver digest is not known).
func (i *Index) PutRecord(ctx context.Context, r digest.Digest, rec events.CacheRecord) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("cache index: %w", err)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("cache index: %w", err)
	}
	if _, err := i.kv.Put(ctx, Key(r), v); err != nil {
		return fmt.Errorf("cache index put %s: %w", r, err)
	}
	return nil
}

// Entry is one stored record and the digest it is stored under.
type Entry struct {
	// Digest is the record digest the record is stored under.
	Digest digest.Digest
	// Record is the record.
	Record events.CacheRecord
}

// List returns every entry of the index. It reads the whole bucket: for
// maintenance (pruning), not for lookups.
func (i *Index) List(ctx context.Context) ([]Entry, error) {
	lister, err := i.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("cache index: %w", err)
	}
	var out []Entry
	for key := range lister.Keys() {
		d := digest.Digest(strings.Replace(key, ".", ":", 1))
		rec, found, err := i.GetRecord(ctx, d)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, Entry{Digest: d, Record: rec})
		}
	}
	return out, nil
}

// Delete removes the record stored under record digest d.
func (i *Index) Delete(ctx context.Context, d digest.Digest) error {
	if err := i.kv.Delete(ctx, Key(d)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cache index delete %s: %w", d, err)
	}
	return nil
}
