package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

const waitFor = 10 * time.Second

var (
	op        = events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20"}
	canonical = events.SourceOp{Identifier: op.Identifier, Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}
	key0      = events.CacheKey{Index: 0, Key: "sha256:k0", Digest: "sha256:d0", Pin: "sha256:pin"}
	key1      = events.CacheKey{Index: 1, Key: "sha256:k1", Digest: "sha256:d1", Pin: "sha256:pin", Done: true}
)

func TestNewBuildID(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool, 1000)
	for range 1000 {
		id := client.NewBuildID()
		if err := events.ValidateBuildID(id); err != nil {
			t.Fatalf("NewBuildID() = %q: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("NewBuildID() returned %q twice", id)
		}
		seen[id] = true
	}
}

// samplePayloads has one payload of every catalog type (source.changed,
// which a tag watch follows without end, is never terminal).
var samplePayloads = []events.Payload{
	events.SourceResolveRequested{},
	events.SourceResolved{},
	events.SourceFailed{},
	events.CacheKeyRequested{},
	events.CacheKeyComputed{},
	events.CacheHit{},
	events.CacheMiss{},
	events.SnapshotRequested{},
	events.SnapshotReady{},
	events.SnapshotFailed{},
	events.Progress{},
	events.CacheExportRequested{},
	events.CacheExported{},
	events.CacheExportFailed{},
	events.CacheImportRequested{},
	events.CacheImported{},
	events.CacheImportFailed{},
	events.SourceChanged{},
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	terminal := map[events.Type]bool{
		events.TypeCacheHit:          true,
		events.TypeSourceFailed:      true,
		events.TypeSnapshotReady:     true,
		events.TypeSnapshotFailed:    true,
		events.TypeCacheExported:     true,
		events.TypeCacheExportFailed: true,
		events.TypeCacheImported:     true,
		events.TypeCacheImportFailed: true,
	}
	byType := map[events.Type]events.Payload{}
	for _, p := range samplePayloads {
		byType[p.EventType()] = p
	}
	for _, spec := range events.Catalog() {
		t.Run(spec.Name, func(t *testing.T) {
			t.Parallel()
			p, ok := byType[spec.Type]
			if !ok {
				t.Fatalf("no sample payload for %s: add one and say whether it is terminal", spec.Type)
			}
			if got := client.Terminal(events.New(p)); got != terminal[spec.Type] {
				t.Errorf("Terminal(%s) = %v, want %v", spec.Type, got, terminal[spec.Type])
			}
		})
	}
	t.Run("hit followed by a snapshot", func(t *testing.T) {
		t.Parallel()
		if client.Terminal(events.New(events.CacheHit{Snapshot: true})) {
			t.Error("a hit that a snapshot.requested follows is terminal")
		}
	})
	t.Run("no payload", func(t *testing.T) {
		t.Parallel()
		if client.Terminal(events.Event{}) {
			t.Error("Terminal of an event without payload = true")
		}
	})
}

// inBuild wraps payloads as events of build b.
func inBuild(b string, ps ...events.Payload) []events.Event {
	out := make([]events.Event, 0, len(ps))
	for _, p := range ps {
		e := events.New(p)
		e.BuildID = b
		out = append(out, e)
	}
	return out
}

func TestOutcomeAdd(t *testing.T) {
	t.Parallel()
	hit := events.CacheHit{Source: canonical, Key: key0, Record: events.CacheRecord{ChainID: "sha256:chain"}}
	miss := events.CacheMiss{Source: canonical, Keys: []events.CacheKey{key0, key1}}
	failed := events.SourceFailed{Source: op, Step: events.TypeSourceResolveRequested, Reason: "no handler for git", Code: "invalid", Attempts: 1}
	failedLater := events.SourceFailed{Source: op, Step: events.TypeCacheKeyRequested, Reason: "pull: registry unavailable", Code: "unavailable", Attempts: 5}
	for _, tc := range []struct {
		name    string
		in      []events.Event
		want    client.Outcome
		done    bool
		wantErr string
	}{
		{
			name: "nothing yet",
			in:   inBuild("b", events.SourceResolveRequested{Source: op}),
			want: client.Outcome{BuildID: "b", Source: op}, // the source as asked, until the resolver canonicalises it
		},
		{
			name: "resolved, not done",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op},
				events.SourceResolved{Source: canonical, Scheme: "docker-image", Handler: "puller"},
				events.CacheKeyRequested{Source: canonical},
				events.Progress{ID: "resolve docker.io/library/alpine:3.20"},
			),
			want: client.Outcome{BuildID: "b", Source: canonical},
		},
		{
			name: "hit at index 0",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op},
				events.SourceResolved{Source: canonical, Scheme: "docker-image", Handler: "puller"},
				events.CacheKeyRequested{Source: canonical},
				hit,
			),
			want: client.Outcome{BuildID: "b", Source: canonical, Keys: []events.CacheKey{key0}, Pin: "sha256:pin", Hit: &hit},
			done: true,
		},
		{
			name: "miss after two computed",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op},
				events.SourceResolved{Source: canonical, Scheme: "docker-image", Handler: "puller"},
				events.CacheKeyRequested{Source: canonical},
				events.CacheKeyComputed{Source: canonical, Key: key0},
				events.CacheKeyRequested{Source: canonical, Index: 1, Keys: []events.CacheKey{key0}},
				events.CacheKeyComputed{Source: canonical, Key: key1},
				miss,
			),
			want: client.Outcome{BuildID: "b", Source: canonical, Keys: []events.CacheKey{key0, key1}, Pin: "sha256:pin", Miss: &miss},
			done: true,
		},
		{
			name: "remote snapshot: a hit is not the end",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op, SnapshotBy: "node1"},
				hit,
			),
			want: client.Outcome{BuildID: "b", Source: canonical, Keys: []events.CacheKey{key0}, Pin: "sha256:pin", Hit: &hit, Pull: true, SnapshotBy: "node1"},
		},
		{
			name: "remote snapshot: a miss is not the end",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op, SnapshotBy: "node1"},
				miss,
			),
			want: client.Outcome{BuildID: "b", Source: canonical, Keys: []events.CacheKey{key0, key1}, Pin: "sha256:pin", Miss: &miss, Pull: true, SnapshotBy: "node1"},
		},
		{
			name: "remote snapshot: its snapshot ends it",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op, SnapshotBy: "node1"},
				miss,
				events.SnapshotReady{ChainID: "sha256:chain", Node: "node1"},
			),
			want: client.Outcome{BuildID: "b", Source: canonical, Keys: []events.CacheKey{key0, key1}, Pin: "sha256:pin", Miss: &miss, Pull: true, SnapshotBy: "node1",
				Snapshot: &events.SnapshotReady{ChainID: "sha256:chain", Node: "node1"}},
			done: true,
		},
		{
			name: "failure",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op},
				failed,
			),
			want:    client.Outcome{BuildID: "b", Source: op, Failed: &failed},
			done:    true,
			wantErr: "no handler for git",
		},
		{
			name: "failure after resolve keeps the canonical source",
			in: inBuild("b",
				events.SourceResolveRequested{Source: op},
				events.SourceResolved{Source: canonical, Scheme: "docker-image", Handler: "puller"},
				events.CacheKeyRequested{Source: canonical},
				failedLater,
			),
			want:    client.Outcome{BuildID: "b", Source: canonical, Failed: &failedLater},
			done:    true,
			wantErr: "pull: registry unavailable",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got client.Outcome
			for _, e := range tc.in {
				got.Add(e)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(client.Outcome{})); diff != "" {
				t.Errorf("Outcome (-want +got):\n%s", diff)
			}
			if got.Done() != tc.done {
				t.Errorf("Done() = %v, want %v", got.Done(), tc.done)
			}
			err := got.Err()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Err() = %v, want nil", err)
				}
				return
			}
			var be *client.BuildError
			if !errors.As(err, &be) {
				t.Fatalf("Err() = %T %v, want a *client.BuildError", err, err)
			}
			if err.Error() != tc.wantErr {
				t.Errorf("Err().Error() = %q, want %q", err.Error(), tc.wantErr)
			}
			if diff := cmp.Diff(*tc.want.Failed, be.Failure); diff != "" {
				t.Errorf("BuildError.Failure (-want +got):\n%s", diff)
			}
		})
	}
}

// streamMsgs is how many messages the events stream holds.
func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestSubmit(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{Memory: true})
	t.Run("invalid build ids", func(t *testing.T) {
		t.Run("each", func(t *testing.T) {
			for _, id := range []string{"", "a.b", "a*", "a>", "with space", "ü", strings.Repeat("x", events.MaxBuildIDLen+1)} {
				t.Run(id, func(t *testing.T) {
					t.Parallel()
					if _, err := client.Submit(t.Context(), env.JS, id, events.SourceResolveRequested{Source: op}); !errors.Is(err, events.ErrInvalid) {
						t.Errorf("Submit(%q) = %v, want an error matching events.ErrInvalid", id, err)
					}
				})
			}
		})
		// After every invalid submit has returned: none published anything.
		if n := streamMsgs(t, env.JS); n != 0 {
			t.Errorf("stream holds %d messages after invalid submits, want 0", n)
		}
	})
	t.Run("valid build id", func(t *testing.T) {
		rec := env.Record(t, "ok-1")
		sent, err := client.Submit(t.Context(), env.JS, "ok-1", events.SourceResolveRequested{Source: op})
		if err != nil {
			t.Fatal(err)
		}
		if sent.ID != "ok-1-request" || sent.BuildID != "ok-1" || !strings.HasPrefix(sent.Source, "/stevedore/client/") || sent.Time.IsZero() {
			t.Errorf("Submit envelope = %+v", sent)
		}
		got := rec.Wait(t, waitFor, events.TypeSourceResolveRequested)
		if diff := cmp.Diff(events.Payload(events.SourceResolveRequested{Source: op}), got.Data); diff != "" {
			t.Errorf("published payload (-want +got):\n%s", diff)
		}
		if got.ID != sent.ID || got.BuildID != sent.BuildID || got.Source != sent.Source {
			t.Errorf("published envelope = %+v, Submit returned %+v", got, sent)
		}
		if n := streamMsgs(t, env.JS); n != 1 {
			t.Errorf("stream holds %d messages, want 1", n)
		}
	})
}

// fleet stands in for the services: it watches the build and, when it sees
// the request, publishes reply(request) derived from it. It stops at the end
// of the test.
func fleet(t *testing.T, env *bustest.Env, buildID string, reply func(events.SourceResolveRequested) []events.Event) {
	t.Helper()
	_, js := env.Connect(t, "fleet")
	w, err := bus.WatchBuild(t.Context(), js, buildID)
	if err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(js)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			e, err := w.Next()
			if err != nil {
				return
			}
			req, ok := e.Data.(events.SourceResolveRequested)
			if !ok {
				continue
			}
			outs := bus.DeriveAll(e, reply(req), "/stevedore/fake-fleet", time.Now())
			if err := pub.PublishAll(t.Context(), outs); err != nil && context.Cause(t.Context()) == nil {
				t.Errorf("fleet publish: %v", err)
			}
			return
		}
	}()
	t.Cleanup(func() { w.Stop(); wg.Wait() })
}

func TestResolve(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{Memory: true})
	miss := events.CacheMiss{Source: canonical, Keys: []events.CacheKey{key0, key1}}
	failed := events.SourceFailed{Source: op, Step: events.TypeSourceResolveRequested, Reason: "no handler for git", Code: "invalid", Attempts: 1}
	for _, tc := range []struct {
		name    string
		reply   []events.Payload
		want    client.Outcome
		wantErr string
	}{
		{
			name: "miss",
			reply: []events.Payload{
				events.SourceResolved{Source: canonical, Scheme: "docker-image", Handler: "puller"},
				events.CacheKeyComputed{Source: canonical, Key: key0},
				events.CacheKeyComputed{Source: canonical, Key: key1},
				miss,
				// After the terminal event: Resolve must not wait for it.
				events.Progress{ID: "late"},
			},
			want: client.Outcome{Source: canonical, Keys: []events.CacheKey{key0, key1}, Pin: "sha256:pin", Miss: &miss},
		},
		{
			name:    "failure",
			reply:   []events.Payload{failed},
			want:    client.Outcome{Source: op, Failed: &failed},
			wantErr: "no handler for git",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buildID := "resolve-" + strings.ReplaceAll(tc.name, " ", "-")
			fleet(t, env, buildID, func(req events.SourceResolveRequested) []events.Event {
				if diff := cmp.Diff(op, req.Source); diff != "" {
					t.Errorf("request source (-want +got):\n%s", diff)
				}
				out := make([]events.Event, 0, len(tc.reply))
				for _, p := range tc.reply {
					out = append(out, events.New(p))
				}
				return out
			})
			ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("Resolve did not finish"))
			defer cancel()
			var seen []events.Type
			got, err := client.Resolve(ctx, env.JS, buildID, op, func(e events.Event) { seen = append(seen, e.Type()) })

			if tc.wantErr == "" && err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if tc.wantErr != "" {
				var be *client.BuildError
				if !errors.As(err, &be) || err.Error() != tc.wantErr {
					t.Fatalf("Resolve error = %v, want a *client.BuildError %q", err, tc.wantErr)
				}
			}
			want := tc.want
			want.BuildID = buildID
			if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(client.Outcome{})); diff != "" {
				t.Errorf("Outcome (-want +got):\n%s", diff)
			}
			wantSeen := []events.Type{events.TypeSourceResolveRequested}
			for _, p := range tc.reply {
				wantSeen = append(wantSeen, p.EventType())
				if client.Terminal(events.New(p)) || p.EventType() == events.TypeCacheMiss {
					break
				}
			}
			if diff := cmp.Diff(wantSeen, seen); diff != "" {
				t.Errorf("events passed to each (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("invalid build id", func(t *testing.T) {
		t.Parallel()
		if _, err := client.Resolve(t.Context(), env.JS, "no spaces", op, nil); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("Resolve with a bad build id = %v, want an error matching events.ErrInvalid", err)
		}
	})
}

// publishBuild publishes payloads as the events of buildID, in order.
func publishBuild(t *testing.T, env *bustest.Env, buildID string, ps ...events.Payload) {
	t.Helper()
	for i, p := range ps {
		e := events.New(p)
		e.ID = buildID + "-" + string(rune('a'+i))
		e.BuildID = buildID
		e.Source = "/stevedore/test"
		e.Time = time.Now()
		env.Publish(t, e)
	}
}

func TestFollow(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{Memory: true})
	progress := func(id string) events.Payload { return events.Progress{ID: id} }
	miss := events.CacheMiss{Source: canonical}
	for _, tc := range []struct {
		name      string
		stored    []events.Payload
		untilDone bool
		// stopAfter is the number of events after which fn returns false;
		// 0 means never.
		stopAfter int
		want      []string
	}{
		{
			name:      "fn returning false stops",
			stored:    []events.Payload{progress("1"), progress("2"), progress("3")},
			stopAfter: 2,
			want:      []string{"1", "2"},
		},
		{
			name:      "without untilDone a terminal event does not stop",
			stored:    []events.Payload{progress("1"), miss, progress("3")},
			stopAfter: 3,
			want:      []string{"1", "cache.miss", "3"},
		},
		{
			name:      "untilDone stops after the terminal event",
			stored:    []events.Payload{progress("1"), miss, progress("3")},
			untilDone: true,
			want:      []string{"1", "cache.miss"},
		},
		{
			name:      "fn returning false stops before the terminal event",
			stored:    []events.Payload{progress("1"), miss},
			untilDone: true,
			stopAfter: 1,
			want:      []string{"1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buildID := "follow-" + strings.ReplaceAll(tc.name, " ", "-")
			publishBuild(t, env, buildID, tc.stored...)
			ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("Follow did not stop"))
			defer cancel()
			var got []string
			err := client.Follow(ctx, env.JS, buildID, tc.untilDone, func(e events.Event) bool {
				switch p := e.Data.(type) {
				case events.Progress:
					got = append(got, p.ID)
				default:
					got = append(got, events.NameOf(e.Type()))
				}
				return len(got) != tc.stopAfter
			})
			if err != nil {
				t.Fatalf("Follow: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(client.Outcome{})); diff != "" {
				t.Errorf("events passed to fn (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("undecodable events are skipped", func(t *testing.T) {
		t.Parallel()
		const buildID = "follow-garbage"
		if _, err := env.JS.Publish(t.Context(), events.Subject(buildID, events.TypeProgress), []byte("not an event")); err != nil {
			t.Fatal(err)
		}
		publishBuild(t, env, buildID, progress("after"), miss)
		ctx, cancel := context.WithTimeoutCause(t.Context(), waitFor, errors.New("Follow did not stop"))
		defer cancel()
		var got []events.Type
		err := client.Follow(ctx, env.JS, buildID, true, func(e events.Event) bool {
			got = append(got, e.Type())
			return true
		})
		if err != nil {
			t.Fatalf("Follow: %v", err)
		}
		if diff := cmp.Diff([]events.Type{events.TypeProgress, events.TypeCacheMiss}, got); diff != "" {
			t.Errorf("events passed to fn (-want +got):\n%s", diff)
		}
	})

	t.Run("invalid build id", func(t *testing.T) {
		t.Parallel()
		err := client.Follow(t.Context(), env.JS, "a.b", true, func(events.Event) bool {
			t.Error("fn called")
			return true
		})
		if !errors.Is(err, events.ErrInvalid) {
			t.Errorf("Follow(a.b) = %v, want an error matching events.ErrInvalid", err)
		}
	})
}

func TestFollowReturnsCause(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{Memory: true})
	cause := errors.New("user pressed ctrl-c")
	for _, tc := range []struct {
		name   string
		stored []events.Payload
		// timeout, when not zero, ends the context with cause after it.
		timeout time.Duration
		// cancelBefore cancels the context before Follow is called;
		// cancelInFn cancels it from fn, after which Follow blocks in Next.
		cancelBefore, cancelInFn bool
		wantCalls                int
	}{
		{name: "cancelled while waiting", stored: []events.Payload{events.Progress{ID: "1"}}, cancelInFn: true, wantCalls: 1},
		{name: "timed out with no events", timeout: 200 * time.Millisecond},
		{name: "cancelled before the call", cancelBefore: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buildID := "cause-" + strings.ReplaceAll(tc.name, " ", "-")
			publishBuild(t, env, buildID, tc.stored...)
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			if tc.timeout > 0 {
				var stop context.CancelFunc
				ctx, stop = context.WithTimeoutCause(ctx, tc.timeout, cause)
				defer stop()
			}
			if tc.cancelBefore {
				cancel(cause)
			}
			calls := 0
			done := make(chan error, 1)
			go func() {
				done <- client.Follow(ctx, env.JS, buildID, true, func(events.Event) bool {
					calls++
					if tc.cancelInFn {
						cancel(cause)
					}
					return true
				})
			}()
			select {
			case err := <-done:
				if !errors.Is(err, cause) {
					t.Errorf("Follow = %v, want the context's cause %v", err, cause)
				}
				if calls != tc.wantCalls {
					t.Errorf("fn called %d times, want %d", calls, tc.wantCalls)
				}
			case <-time.After(waitFor):
				t.Fatalf("Follow did not return within %s of its context ending", waitFor)
			}
		})
	}
}

func TestWaitReady(t *testing.T) {
	t.Parallel()
	srv, err := broker.Start(broker.Config{DataDir: t.TempDir(), Port: broker.RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("client-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WaitReady(t.Context(), js, 200*time.Millisecond); !errors.Is(err, client.ErrNoFleet) {
		t.Fatalf("WaitReady on a bare server = %v, want ErrNoFleet", err)
	}
	done := make(chan error, 1)
	go func() { done <- client.WaitReady(t.Context(), js, 10*time.Second) }()
	// The premise: WaitReady is still waiting for a fleet when it comes.
	select {
	case err := <-done:
		t.Fatalf("WaitReady before provisioning = %v, want it to wait", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := bus.Provision(t.Context(), js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("WaitReady after provisioning = %v", err)
	}
}

func TestPullOutcome(t *testing.T) {
	t.Parallel()
	var o client.Outcome
	for _, p := range []events.Payload{
		events.SourceResolveRequested{Source: op, Snapshot: true},
		events.CacheMiss{Source: canonical, Keys: []events.CacheKey{key0, key1}},
	} {
		o.Add(events.Event{BuildID: "b", Data: p})
	}
	if o.Done() || !o.Pull {
		t.Fatalf("a pull is not done at cache.miss: %+v", o)
	}
	o.Add(events.Event{BuildID: "b", Data: events.SnapshotReady{ChainID: "sha256:c", Node: "n"}})
	if !o.Done() || o.Snapshot == nil || o.Err() != nil {
		t.Errorf("after snapshot.ready: %+v", o)
	}
	var f client.Outcome
	f.Add(events.Event{BuildID: "b", Data: events.SourceResolveRequested{Source: op, Snapshot: true}})
	f.Add(events.Event{BuildID: "b", Data: events.SnapshotFailed{Reason: "digest mismatch"}})
	var be *client.BuildError
	if !f.Done() || !errors.As(f.Err(), &be) || be.Error() != "digest mismatch" {
		t.Errorf("after snapshot.failed: %+v %v", f, f.Err())
	}
}

// A build with cache requests is over when each of them has ended, and a
// lazy hit is over only at its snapshot's end.
func TestOutcomeCacheSteps(t *testing.T) {
	t.Parallel()
	fold := func(ps ...events.Payload) client.Outcome {
		var o client.Outcome
		for _, e := range inBuild("b", ps...) {
			o.Add(e)
		}
		return o
	}
	pull := events.SourceResolveRequested{Snapshot: true}
	ready := events.SnapshotReady{ChainID: "sha256:c"}
	export := events.CacheExportRequested{Target: "type=local,dest=/c"}
	for _, tc := range []struct {
		name string
		o    client.Outcome
		done bool
		err  string
	}{
		{"pull done, export asked", fold(pull, ready, export), false, ""},
		{"pull and export done", fold(pull, ready, export, events.CacheExported{}), true, ""},
		{"export asked before the pull ended", fold(pull, export, events.CacheExported{}), false, ""},
		{"second export pending", fold(pull, ready, export, events.CacheExported{}, export), false, ""},
		{"export failed", fold(pull, ready, export, events.CacheExportFailed{Reason: "local cache exporter requires dest"}), true, "local cache exporter requires dest"},
		{"import alone", fold(events.CacheImportRequested{}, events.CacheImported{}), true, ""},
		{"import failed", fold(events.CacheImportRequested{}, events.CacheImportFailed{Reason: "invalid looping record"}), true, "invalid looping record"},
		{"lazy hit", fold(pull, events.CacheHit{Snapshot: true}), false, ""},
		{"lazy hit, then snapshot", fold(pull, events.CacheHit{Snapshot: true}, ready), true, ""},
	} {
		if got := tc.o.Done(); got != tc.done {
			t.Errorf("%s: Done() = %v, want %v", tc.name, got, tc.done)
		}
		err := tc.o.Err()
		if (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("%s: Err() = %v, want %q", tc.name, err, tc.err)
		}
	}
}
