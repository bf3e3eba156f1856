package puller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// A local source's key is session-scoped ("session:<name>:<digest>",
// pinned to the digest, done at index 0), the same on every replica for
// one session and different for another session; it is never looked up
// or recorded, so resolving it again is a miss again. (Its bytes are
// checked against BuildKit's own code in conformance/sources_test.go.)
func TestLocalKeys(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	p1 := s.Puller(t)
	attrs := map[string]string{source.AttrLocalSessionID: fleettest.HoldKey(t).ID, source.AttrSharedKeyHint: "h"}
	first := fleettest.Miss(t, s.Resolve(t, "local://context", attrs, ""))
	p1.Stop()
	s.Puller(t)
	second := fleettest.Miss(t, s.Resolve(t, "local://context", attrs, ""))
	if len(first.Keys) != 1 || len(second.Keys) != 1 {
		t.Fatalf("keys %v and %v, want one each", first.Keys, second.Keys)
	}
	k := first.Keys[0]
	if k != second.Keys[0] {
		t.Errorf("two replicas computed %+v and %+v", k, second.Keys[0])
	}
	if !strings.HasPrefix(k.Key, "session:context:sha256:") || k.Pin != strings.TrimPrefix(k.Key, "session:context:") || !k.Done || k.Index != 0 {
		t.Errorf("key = %+v, want session:context:<pin>, done at index 0", k)
	}
	if k.Digest != source.SolverDigest(k.Key) {
		t.Errorf("digest %s, want the solver digest of the key", k.Digest)
	}
	other := fleettest.Miss(t, s.Resolve(t, "local://context", map[string]string{source.AttrLocalSessionID: fleettest.HoldKey(t).ID}, ""))
	if other.Keys[0].Key == k.Key {
		t.Errorf("two sessions share key %s", k.Key)
	}
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := idx.Get(t.Context(), k.Digest); err != nil || found {
		t.Errorf("cache index has the session key: found %v, %v", found, err)
	}
}

// A local source that names no session reads the build's: its key is the
// one local.session would give with that session, and the transfer asks
// that session.
func TestLocalUsesTheBuildsSession(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	build := fleettest.HoldKey(t).ID
	named := fleettest.Miss(t, s.Resolve(t, "local://context", map[string]string{source.AttrLocalSessionID: build}, ""))
	op := events.SourceOp{Identifier: "local://context"}
	rec, _ := s.Submit(t, events.SourceResolveRequested{Source: op, Snapshot: true, Session: build})
	req := rec.Wait(t, 20*time.Second, events.TypeSnapshotRequested, events.TypeSourceFailed)
	got, ok := req.Data.(events.SnapshotRequested)
	if !ok {
		t.Fatalf("build ended with %v", bustest.Summary([]events.Event{req}))
	}
	if got.Keys[0].Key != named.Keys[0].Key || got.Content.Local.Session != build {
		t.Errorf("key %s from session %q; want %s from %s", got.Keys[0].Key, got.Content.Local.Session, named.Keys[0].Key, build)
	}
	// Neither: BuildKit's text.
	if f := fleettest.Failure(t, s.Resolve(t, "local://context", nil, "")); f.Reason != "could not access local files without session" {
		t.Errorf("no session: %+v", f)
	}
}
