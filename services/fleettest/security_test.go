package fleettest_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// Finding 2: duplicate-id pre-emption. Output ids are derived from the
// cause's id, and JetStream drops a repeated Nats-Msg-Id stream-wide. A
// client that knows a build's request id (the build id plus "-request")
// publishes, on the one subject it may publish to, messages carrying the
// ids of every output the fleet will derive along the build's path: the
// resolver's, the puller's for both indexes, the snapshotter's. The
// victim's pull must still end with its snapshot.
func TestSecurityDuplicateIDPreemption(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	ref := s.Push(t, "single", "victim/app:1")

	// The ids a pull of an image derives, step by step, from its request.
	const build = "victim-build"
	req := build + "-request"
	resolved := events.DeriveID(req, events.TypeSourceResolved, 0)
	key0 := events.DeriveID(req, events.TypeCacheKeyRequested, 0)
	var forged []string
	forged = append(forged, resolved, key0)
	for n := range 8 {
		forged = append(forged, events.DeriveID(key0, events.TypeProgress, n))
	}
	computed0 := events.DeriveID(key0, events.TypeCacheKeyComputed, 0)
	key1 := events.DeriveID(key0, events.TypeCacheKeyRequested, 0)
	forged = append(forged, computed0, key1)
	miss := events.DeriveID(key1, events.TypeCacheMiss, 0)
	snap := events.DeriveID(key1, events.TypeSnapshotRequested, 0)
	forged = append(forged, events.DeriveID(key1, events.TypeCacheKeyComputed, 0), miss, snap)
	for n := range 16 {
		forged = append(forged, events.DeriveID(snap, events.TypeProgress, n))
	}
	forged = append(forged, events.DeriveID(snap, events.TypeSnapshotReady, 0), events.DeriveID(snap, events.TypeSnapshotFailed, 0))

	_, js := s.Env.Connect(t, "attacker")
	for _, id := range forged {
		m := nats.NewMsg(events.Subject("attacker-build", events.TypeSourceResolveRequested))
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte("{}")
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	// An attacker that also knows how the fleet derives ids from a stored
	// message's sequence predicts the request's (nothing else publishes
	// meanwhile) and takes the ids of the resolver's outputs.
	stream, err := js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	reqSeq := stream.CachedInfo().State.LastSeq + 3
	cause := fmt.Sprintf("%s@%d", req, reqSeq)
	for _, id := range []string{events.DeriveID(cause, events.TypeSourceResolved, 0), events.DeriveID(cause, events.TypeCacheKeyRequested, 0)} {
		m := nats.NewMsg(events.Subject("attacker-build", events.TypeSourceResolveRequested))
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte("{}")
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}

	rec := s.Env.Record(t, build)
	s.Env.Request(t, build, events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://" + ref}, Snapshot: true})
	e := rec.Wait(t, 15*time.Second, events.TypeSnapshotReady, events.TypeSnapshotFailed, events.TypeSourceFailed)
	if _, ok := e.Data.(events.SnapshotReady); !ok {
		t.Fatalf("the victim's pull ended with %s, want snapshot.ready", e.Type())
	}
	if got := rec.OfType(events.TypeSourceResolveRequested)[0]; got.ID != req {
		t.Fatalf("request id %s", got.ID)
	}
	if resolved := rec.OfType(events.TypeSourceResolved); len(resolved) != 1 || resolved[0].ID == events.DeriveID(cause, events.TypeSourceResolved, 0) {
		t.Errorf("source.resolved: %d events, want one under a reissued id (the predicted sequence was %d)", len(resolved), reqSeq)
	}
}

// A build id used twice is refused with a clear error, not merged with
// the first build (whose events the second client would read as its own).
func TestSecurityReusedBuildIDRefused(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	op := events.SourceOp{Identifier: "docker-image://" + s.Registry.Host() + "/nothing/here:1"}
	if _, err := client.Submit(t.Context(), s.Env.JS, "reused", events.SourceResolveRequested{Source: op}); err != nil {
		t.Fatal(err)
	}
	_, err := client.Submit(t.Context(), s.Env.JS, "reused", events.SourceResolveRequested{Source: op, Snapshot: true})
	if err == nil {
		t.Fatal("a second build under one build id was accepted")
	}
	if !errors.Is(err, bus.ErrDuplicateID) {
		t.Errorf("reused build id: %v, want bus.ErrDuplicateID", err)
	}
}

// Finding 4, at the fleet: a layer past the snapshotter's limits fails the
// pull at once, as a permanent failure (one attempt, code invalid) that
// names the limit and none of the node's paths; no retries.
func TestSecuritySnapshotLimitIsPermanent(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t, func(c *snapshotter.Config) { c.Limits = snapshot.Limits{LayerBytes: 16} })
	ref := s.Push(t, "single", "big/app:1")
	rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	e := fleettest.PullEnd(t, rec)
	failed, ok := e.Data.(events.SnapshotFailed)
	if !ok {
		t.Fatalf("pull past the layer size limit ended with %s, want snapshot.failed", e.Type())
	}
	if failed.Code != "invalid" || failed.Attempts != 1 || !strings.Contains(failed.Reason, "layer size limit") {
		t.Errorf("failure %+v: want code invalid, one attempt, the limit named", failed)
	}
	if strings.Contains(failed.Reason, svc.Store().Root()) {
		t.Errorf("the failure shows the data dir: %s", failed.Reason)
	}
}

// Finding 6: an event whose layer's diffID is not a digest ("x") fails at
// once as invalid: no panic, no retries.
func TestSecurityBadDiffIDIsInvalid(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Snapshotter(t)
	ref := s.Push(t, "single", "bad/diffid:1")
	opts := events.CacheOpts{Ref: ref, RootFSType: "layers", Layers: []events.Layer{{
		Blob:   ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("blob"), Size: 4},
		DiffID: "x",
	}}}
	rec := s.Env.Record(t, "baddiff")
	key := events.CacheKey{Index: 1, Key: "k", Digest: digest.FromString("k"), Done: true}
	s.Env.Request(t, "baddiff", events.SnapshotRequested{Source: events.SourceOp{Identifier: "docker-image://" + ref}, Keys: []events.CacheKey{key}, CacheOpts: &opts})
	e := rec.Wait(t, 15*time.Second, events.TypeSnapshotFailed, events.TypeSnapshotReady)
	failed, ok := e.Data.(events.SnapshotFailed)
	if !ok || failed.Code != "invalid" || failed.Attempts != 1 {
		t.Errorf("snapshot of a layer with diffID \"x\" ended with %+v, want snapshot.failed invalid at the first attempt", e.Data)
	}
}

// Finding 6: credentials in a source URL are refused by the client before
// it publishes anything, and a request that carries them anyway (a client
// that skips the check) is refused by the resolver without the secret
// reaching any event it emits or the dead-letter stream.
func TestSecurityCredentialsInURLsRefused(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	const secret = "pw-s3cret"
	op := events.SourceOp{Identifier: "https://user:" + secret + "@" + s.Registry.Host() + "/file"}
	if _, err := client.Submit(t.Context(), s.Env.JS, "creds-client", events.SourceResolveRequested{Source: op}); err == nil {
		t.Error("the client published a source with credentials in its URL")
	}
	stream, err := s.Env.JS.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(events.BuildFilter("creds-client")))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 0 {
		t.Errorf("the events stream holds %v for the refused build", info.State.Subjects)
	}

	rec := s.Env.Record(t, "creds-raw")
	req := s.Env.Request(t, "creds-raw", events.SourceResolveRequested{Source: op})
	e := rec.Wait(t, 15*time.Second, events.TypeSourceFailed, events.TypeCacheHit, events.TypeCacheMiss)
	if f, ok := e.Data.(events.SourceFailed); !ok || f.Code != "invalid" {
		t.Errorf("a request with credentials in its URL ended with %+v, want source.failed invalid", e.Data)
	}
	// Everything the resolver emitted is stored once it has settled the
	// request; the stream, not the watcher, is what the checks read.
	s.ConsumerIdle(t, events.ConsumerResolver)
	for _, ev := range s.Env.Stored(t, "creds-raw") {
		if ev.ID == req.ID {
			continue
		}
		m, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(m.Data), secret) {
			t.Errorf("%s repeats the password: %s", ev.Type(), m.Data)
		}
	}
	// The refused request was settled without a dead letter. Once the
	// mover has copied a request the resolver does terminate, published
	// after it, it has been past where that dead letter would be.
	marker := s.Env.Request(t, "creds-marker", events.SourceResolveRequested{Source: events.SourceOp{Identifier: "no-such-scheme://x"}})
	dlq, err := s.Env.JS.Stream(t.Context(), events.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	var dead []*jetstream.RawStreamMsg
	fleettest.WaitFor(t, func() bool {
		info, err := dlq.Info(t.Context())
		if err != nil {
			return false
		}
		dead = dead[:0]
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			if m, err := dlq.GetMsg(t.Context(), seq); err == nil {
				dead = append(dead, m)
			}
		}
		return slices.ContainsFunc(dead, func(m *jetstream.RawStreamMsg) bool { return m.Header.Get(events.HeaderPrefix+"id") == marker.ID })
	})
	for _, m := range dead {
		if strings.Contains(string(m.Data), secret) || strings.Contains(fmt.Sprint(m.Header), secret) {
			t.Errorf("the dead-letter stream holds the password (#%d)", m.Sequence)
		}
	}
}

// Finding 3: a session serves only the builds of its own client. A client
// that learns another's session id (every build's events carry it) starts
// a build naming it; the session refuses that build's requests, so the
// build fails at once and reads nothing the session serves.
func TestSecuritySessionServesOnlyItsBuilds(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "private.txt"), []byte("the victim's file"), 0o600); err != nil {
		t.Fatal(err)
	}
	victim := s.ServeSession(t, session.Config{Protocols: []session.Protocol{fleettest.Dirs(t, map[string]string{"context": dir})}, Builds: []string{"victim-build"}})
	attrs := map[string]string{source.AttrLocalSessionID: victim}
	rec, _ := s.Request(t, "local://context", attrs, "", true)
	switch e := fleettest.PullEnd(t, rec); p := e.Data.(type) {
	case events.SnapshotReady:
		t.Fatalf("a build naming another client's session snapshotted its directory (chainID %s)", p.ChainID)
	case events.SnapshotFailed:
		if p.Code != "not-found" || !strings.Contains(p.Reason, "no active session") {
			t.Errorf("failure %+v: want not-found, BuildKit's no active session", p)
		}
	case events.SourceFailed:
		if p.Code != "not-found" || !strings.Contains(p.Reason, "no active session") {
			t.Errorf("failure %+v: want not-found, BuildKit's no active session", p)
		}
	default:
		t.Fatalf("the pull ended with %s", e.Type())
	}

	// The session's own build reads it.
	own := s.ServeSession(t, session.Config{Protocols: []session.Protocol{fleettest.Dirs(t, map[string]string{"context": dir})}, Builds: []string{"b2"}})
	rec, id := s.Request(t, "local://context", map[string]string{source.AttrLocalSessionID: own}, "", true)
	if id != "b2" {
		t.Fatalf("build id %s, want b2 (the ids Submit gives are b1, b2, …)", id)
	}
	if e := fleettest.PullEnd(t, rec); e.Type() != events.TypeSnapshotReady {
		t.Errorf("the session's own build ended with %s, want snapshot.ready", bustest.Summary([]events.Event{e}))
	}
}

// Finding 4: work for a build whose client is gone stops. A pull's client
// serves a session; while its layer is being fetched, the client goes away
// (its session stops answering). The snapshotter notices and stops the
// work at once, failing the build for good (one attempt), instead of
// fetching and extracting to the end.
func TestSecurityWorkStopsWhenClientGoes(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t, func(c *snapshotter.Config) { c.ClientCheck = 100 * time.Millisecond })
	ref := s.Push(t, "single", "gone/app:1")
	// Resolved once first, so the pull's only blob request is the layer's
	// (the config is in the manifests bucket).
	if e := fleettest.Final(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64")); e.Type() != events.TypeCacheMiss {
		t.Fatalf("resolve ended with %s", e.Type())
	}
	gate := s.Registry.Gate("GET", registrytest.KindBlob)
	t.Cleanup(gate.Release)
	nc, _ := s.Env.Connect(t, "client")
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := session.Serve(t.Context(), nc, key.ID, session.Config{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	op := events.SourceOp{Identifier: "docker-image://" + ref}
	p, err := service.Platform("linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	op.Platform = &p
	rec, _ := s.Submit(t, events.SourceResolveRequested{Source: op, Snapshot: true, Session: key.ID})
	select {
	case <-gate.Arrived():
	case <-time.After(30 * time.Second):
		t.Fatal("the layer was never asked for")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The gate still holds the layer: only the client's leaving ends the
	// work.
	e := fleettest.PullEnd(t, rec)
	failed, ok := e.Data.(events.SnapshotFailed)
	if !ok {
		t.Fatalf("the pull whose client left ended with %s, want snapshot.failed", bustest.Summary([]events.Event{e}))
	}
	if failed.Attempts != 1 || !strings.Contains(failed.Reason, "no active session") {
		t.Errorf("failure %+v: want one attempt, the client's session gone", failed)
	}
}

// Issue 12, the join: a client that learns another build's id and session
// (both are in the events stream) publishes a request of its own on that
// build's subject, naming the session: the session serves that build, so
// before requests were signed the fleet read the victim's directory for
// the attacker. A request naming a session acts only when that session's
// key signed it (its build, its event id, its payload).
func TestSecurityRequestNamesForeignSession(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "private.txt"), []byte("the victim's file"), 0o600); err != nil {
		t.Fatal(err)
	}
	const build = "victim-join"
	victim := s.ServeSession(t, session.Config{Protocols: []session.Protocol{fleettest.Dirs(t, map[string]string{"context": dir})}, Builds: []string{build}})
	rec := s.Env.Record(t, build)
	op := events.SourceOp{Identifier: "local://context", Attrs: map[string]string{source.AttrLocalSessionID: victim}}
	e := events.New(events.SourceResolveRequested{Source: op, Snapshot: true, Session: victim})
	e.ID, e.BuildID, e.Source, e.Time = build+"-attacker", build, "/stevedore/client/attacker", time.Now()
	s.Env.Publish(t, e)
	switch end := fleettest.PullEnd(t, rec); p := end.Data.(type) {
	case events.SnapshotReady:
		t.Fatalf("an unsigned request naming another client's session snapshotted its directory (chainID %s)", p.ChainID)
	case events.SourceFailed:
		if p.Code != "invalid" || !strings.Contains(p.Reason, "signed") {
			t.Errorf("failure %+v: want invalid, saying the request is not signed by the session", p)
		}
	default:
		t.Fatalf("the attacker's request ended with %s, want source.failed", bustest.Summary([]events.Event{end}))
	}

	// Signed by a key of the attacker's own, under the victim's id.
	own, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	forged := e
	forged.ID = build + "-attacker-signed"
	if err := own.SignRequest(&forged); err != nil {
		t.Fatal(err)
	}
	req := forged.Data.(events.SourceResolveRequested)
	req.Signatures = map[string]string{victim: req.Signatures[own.ID]}
	forged.Data = req
	rec = s.Env.Record(t, build)
	s.Env.Publish(t, forged)
	if p, ok := waitFor(t, rec, forged.ID).Data.(events.SourceFailed); !ok || p.Code != "invalid" || !strings.Contains(p.Reason, "signed") {
		t.Errorf("a request signed by another key under the victim's id ended with %+v, want source.failed, invalid, not signed", p)
	}

	// The victim's own request, signed with its key, reads its directory;
	// the same signed request replayed under another id is refused.
	mine := e
	mine.ID = build + "-request"
	if err := session.SignRequest(&mine); err != nil {
		t.Fatal(err)
	}
	replay := mine
	replay.ID = build + "-replayed"
	rec = s.Env.Record(t, build)
	s.Env.Publish(t, mine)
	s.Env.Publish(t, replay)
	if end := waitFor(t, rec, mine.ID); end.Type() != events.TypeSnapshotReady {
		t.Errorf("the victim's signed request ended with %s, want snapshot.ready", bustest.Summary([]events.Event{end}))
	}
	if p, ok := waitFor(t, rec, replay.ID).Data.(events.SourceFailed); !ok || !strings.Contains(p.Reason, "signed") {
		t.Errorf("the victim's request replayed under another id ended with %+v, want source.failed, not signed", p)
	}
}

// waitFor waits (30 s) for the end of what request id caused on rec's
// build: the first terminal event whose chain leads back to id.
func waitFor(t *testing.T, rec *bustest.Recorder, id string) events.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		causes := map[string]bool{id: true}
		for _, e := range rec.Events() {
			if !causes[e.CausationID] && e.ID != id {
				continue
			}
			causes[e.ID] = true
			if client.Terminal(e) {
				return e
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no end of request %s in 30 s: %s", id, bustest.Summary(rec.Events()))
	return events.Event{}
}

// Finding 6, the request itself: a client that bypasses the client library
// publishes a source with credentials in its URL. The resolver refuses it
// (TestSecurityCredentialsInURLsRefused), and then deletes the request
// from the events stream, so that no later reader of the stream finds the
// password; no dead-letter copy is made either.
func TestSecurityRefusedCredentialsErased(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	const secret = "pw-erased"
	op := events.SourceOp{Identifier: "https://user:" + secret + "@" + s.Registry.Host() + "/file"}
	rec := s.Env.Record(t, "creds-erased")
	s.Env.Request(t, "creds-erased", events.SourceResolveRequested{Source: op})
	if e := rec.Wait(t, 15*time.Second, events.TypeSourceFailed, events.TypeCacheHit, events.TypeCacheMiss); e.Type() != events.TypeSourceFailed {
		t.Fatalf("a request with credentials in its URL ended with %s", e.Type())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := s.StoredWith(t, secret)
		if len(found) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the refusal JetStream still holds the password in %v", found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
