// Package tagwatch is the fleet's set of watched tags: references whose
// tag the fleet re-resolves on an interval to notice when it moves.
//
// Vocabulary: a watch (Watch) is a reference, a platform, whether a move
// pre-pulls, and the digest the tag last pointed to. The watches live in
// the KV bucket events.BucketWatches, so they outlive any replica. Each
// interval is a round, numbered from the Unix epoch; the replica that
// claims a round (Claim, compare-and-set on one key) checks every watch
// (Check) for the whole fleet, and a replica lost mid-interval leaves the
// next round to any other. A watch whose tag moved gives an
// events.SourceChanged, published under events.WatchBuildID.
package tagwatch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Watch is one watched reference.
type Watch struct {
	// Ref is the reference, host/repo:tag.
	Ref string `json:"ref"`
	// Platform is the platform a pre-pull is for ("linux/amd64"); empty
	// means the fleet's.
	Platform string `json:"platform,omitempty"`
	// Prepull asks that a move pulls the new digest onto the
	// snapshotters.
	Prepull bool `json:"prepull,omitempty"`
	// Digest is what the tag pointed to when last checked; empty before
	// the first check.
	Digest string `json:"digest,omitempty"`
	// CheckedAt is when it was last checked; zero before the first check.
	CheckedAt time.Time `json:"checkedAt,omitzero"`
	// Error is what the registry said at the last check, when it failed.
	Error string `json:"error,omitempty"`
}

// ErrClaimed is returned by Claim when another replica holds the round.
var ErrClaimed = errors.New("tagwatch: round claimed by another replica")

// ErrInvalid is returned for a watch without a tag.
var ErrInvalid = errors.New("tagwatch: invalid watch")

// roundKey holds the last claimed round.
const roundKey = "round"

// Store reads and writes the watches.
type Store struct {
	kv jetstream.KeyValue
}

// Open binds to events.BucketWatches.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, events.BucketWatches)
	if err != nil {
		return nil, fmt.Errorf("tagwatch: bucket %s: %w", events.BucketWatches, err)
	}
	return &Store{kv: kv}, nil
}

// key is the KV key of a watch: "watch." and a hash of its reference and
// platform.
func key(ref, platform string) string {
	sum := sha256.Sum256([]byte(ref + "\x00" + platform))
	return "watch." + hex.EncodeToString(sum[:16])
}

// Add stores w (without a digest: the next round records the tag's
// current one without calling it a move). Adding a watch again changes
// its Prepull and keeps its digest.
//
// Errors: ErrInvalid for a reference without a tag or with a digest; the
// bucket's.
func (s *Store) Add(ctx context.Context, w Watch) error {
	if w.Ref == "" || strings.Contains(w.Ref, "@") || !strings.Contains(w.Ref[strings.LastIndex(w.Ref, "/")+1:], ":") {
		return fmt.Errorf("%w: %q is not host/repo:tag", ErrInvalid, w.Ref)
	}
	k := key(w.Ref, w.Platform)
	if e, err := s.kv.Get(ctx, k); err == nil {
		var old Watch
		if json.Unmarshal(e.Value(), &old) == nil {
			w.Digest, w.CheckedAt = old.Digest, old.CheckedAt
		}
	}
	v, err := json.Marshal(Watch{Ref: w.Ref, Platform: w.Platform, Prepull: w.Prepull, Digest: w.Digest, CheckedAt: w.CheckedAt})
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, k, v); err != nil {
		return fmt.Errorf("tagwatch: add %s: %w", w.Ref, err)
	}
	return nil
}

// Remove deletes the watch of ref and platform; removing one that is not
// there is no error.
func (s *Store) Remove(ctx context.Context, ref, platform string) error {
	if err := s.kv.Delete(ctx, key(ref, platform)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("tagwatch: remove %s: %w", ref, err)
	}
	return nil
}

// List returns the watches, sorted by reference and platform.
func (s *Store) List(ctx context.Context) ([]Watch, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "watch.>")
	if err != nil {
		return nil, fmt.Errorf("tagwatch: list: %w", err)
	}
	var out []Watch
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tagwatch: list: %w", err)
		}
		var w Watch
		if json.Unmarshal(e.Value(), &w) == nil {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b Watch) int { return strings.Compare(a.Ref+"\x00"+a.Platform, b.Ref+"\x00"+b.Platform) })
	return out, nil
}

// Round is the number of the interval now falls in.
func Round(now time.Time, interval time.Duration) uint64 {
	n := now.UnixNano() / int64(interval)
	if n < 0 {
		return 0 // before 1970: no round
	}
	return uint64(n)
}

// Claim makes round this replica's: it succeeds for one caller per round
// across the fleet.
//
// Errors: ErrClaimed when the round (or a later one) is another's; the
// bucket's.
func (s *Store) Claim(ctx context.Context, round uint64) error {
	v := binary.BigEndian.AppendUint64(nil, round)
	e, err := s.kv.Get(ctx, roundKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		_, err = s.kv.Create(ctx, roundKey, v)
	case err != nil:
		return fmt.Errorf("tagwatch: claim: %w", err)
	default:
		if len(e.Value()) == 8 && binary.BigEndian.Uint64(e.Value()) >= round {
			return ErrClaimed
		}
		_, err = s.kv.Update(ctx, roundKey, v, e.Revision())
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
		return ErrClaimed
	}
	if err != nil {
		return fmt.Errorf("tagwatch: claim: %w", err)
	}
	return nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Resolver resolves a reference to the digest its tag points to now.
type Resolver interface {
	// Resolve returns the top-level digest of ref (an index or a
	// manifest).
	Resolve(ctx context.Context, ref string) (digest.Digest, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, ref string) (digest.Digest, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, ref string) (digest.Digest, error) {
	return f(ctx, ref)
}

// Check resolves every watch and returns the moves: a watch whose digest
// was known and differs now. Each watch is stored with what was seen
// (compare-and-set: a watch removed or changed meanwhile is left alone). A
// registry that fails leaves the digest as it was and records the error.
//
// Errors: the bucket's.
func (s *Store) Check(ctx context.Context, r Resolver, now time.Time) ([]events.SourceChanged, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "watch.>")
	if err != nil {
		return nil, fmt.Errorf("tagwatch: check: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var out []events.SourceChanged
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue // removed meanwhile
		}
		var w Watch
		if json.Unmarshal(e.Value(), &w) != nil {
			continue
		}
		d, rerr := r.Resolve(ctx, w.Ref)
		w.CheckedAt, w.Error = now.UTC(), ""
		var moved *events.SourceChanged
		switch {
		case rerr != nil:
			w.Error = rerr.Error()
		case w.Digest != "" && w.Digest != d.String():
			moved = &events.SourceChanged{Ref: w.Ref, Platform: w.Platform, Old: w.Digest, New: d.String(), Prepull: w.Prepull}
			w.Digest = d.String()
		default:
			w.Digest = d.String()
		}
		v, err := json.Marshal(w)
		if err != nil {
			return out, err
		}
		if _, err := s.kv.Update(ctx, k, v, e.Revision()); err != nil {
			continue // changed or removed meanwhile: the next round sees it
		}
		if moved != nil {
			out = append(out, *moved)
		}
	}
	return out, nil
}
