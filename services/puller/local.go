package puller

import (
	"context"
	"errors"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// localKey is the one key of a local source, BuildKit's: "session:" + the
// directory's name + the digest of its session and patterns, computed
// without reading the session. It is session-scoped, so it is never looked
// up in the cache index (never a hit, never recorded, never exported): a
// local source is always transferred, incrementally, by the snapshotter.
func (h *Handler) localKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	l := id.(*source.LocalIdentifier)
	if in.Index != 0 {
		return nil, failure.Invalid(fmt.Errorf("local has no cache key index %d", in.Index))
	}
	if l.MetadataOnly {
		return nil, failure.Invalid(errors.New("local.metadatatransfer (metadata-only transfers) is not supported yet"))
	}
	// The session is local.session's, or else the build's (BuildKit's
	// next session of the job's group); the key names it.
	session := l.SessionID
	if session == "" {
		session = in.Session
	}
	key, err := l.CacheKey(session)
	if err != nil {
		return nil, err
	}
	ck := events.CacheKey{Index: 0, Key: key.Key, Digest: source.SolverDigest(key.Key), Pin: key.Digest.String(), Done: true}
	keys := []events.CacheKey{ck}
	out := []events.Event{
		events.New(events.CacheKeyComputed{Source: in.Source, Key: ck}),
		events.New(events.CacheMiss{Source: in.Source, Keys: keys, Explanation: sessionScoped(in.Source.Identifier, session)}),
	}
	if in.Snapshot {
		out = append(out, events.New(events.SnapshotRequested{Source: in.Source, Keys: keys, Content: &events.Content{Local: &events.LocalContent{
			Session: session, Name: l.Name,
			IncludePatterns: l.IncludePatterns, ExcludePatterns: l.ExcludePatterns, FollowPaths: l.FollowPaths,
			SharedKey: l.SharedKey(), Differ: l.Differ.String(),
		}}, Session: in.Session}))
	}
	return out, nil
}
