package session_test

import (
	"context"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/tagwatch"
)

// TestDeployWatchPermissions: under deploy/nats.conf the puller
// provisions the watches bucket, claims rounds, records what tags point
// to and says a move; the client adds, lists and removes watches but
// claims no round; the watcher touches none of it. Not parallel: it sets
// the environment.
func TestDeployWatchPermissions(t *testing.T) {
	connect := startDeployServer(t)
	ctx := t.Context()
	_, pjs := connect("puller")
	if err := bus.Provision(ctx, pjs, bus.Topology{}); err != nil {
		t.Fatalf("the puller cannot provision: %v", err)
	}
	_, cjs := connect("client")
	cs, err := tagwatch.Open(ctx, cjs)
	if err != nil {
		t.Fatalf("the client cannot open the watches: %v", err)
	}
	if err := cs.Add(ctx, tagwatch.Watch{Ref: "registry.example/app:1", Prepull: true}); err != nil {
		t.Fatalf("the client cannot add a watch: %v", err)
	}
	if ws, err := cs.List(ctx); err != nil || len(ws) != 1 {
		t.Fatalf("the client lists %+v, %v", ws, err)
	}
	if err := cs.Claim(ctx, 1); err == nil {
		t.Error("the client claimed a round")
	}

	ps, err := tagwatch.Open(ctx, pjs)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Claim(ctx, 2); err != nil {
		t.Fatalf("the puller cannot claim a round: %v", err)
	}
	d := digest.FromString("top")
	if _, err := ps.Check(ctx, tagwatch.ResolverFunc(func(context.Context, string) (digest.Digest, error) { return d, nil }), time.Now()); err != nil {
		t.Fatal(err)
	}
	if ws, err := cs.List(ctx); err != nil || len(ws) != 1 || ws[0].Digest != d.String() {
		t.Fatalf("after the puller's check the client lists %+v, %v", ws, err)
	}
	pub := bus.NewPublisher(pjs)
	for _, e := range []events.Event{
		{ID: "changed-1", BuildID: events.WatchBuildID, Source: "/test", Time: time.Now(), Data: events.SourceChanged{Ref: "registry.example/app:1", Old: d.String(), New: digest.FromString("new").String(), Prepull: true, PrepullBuild: "prepull-1"}},
		{ID: "prepull-1-request", BuildID: "prepull-1", Source: "/test", Time: time.Now(), Data: events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://registry.example/app:1@" + d.String()}, Snapshot: true}},
	} {
		if err := pub.Publish(ctx, e); err != nil {
			t.Errorf("the puller cannot publish %s: %v", events.NameOf(e.Type()), err)
		}
	}

	_, wjs := connect("watcher")
	if ws, err := tagwatch.Open(ctx, wjs); err == nil {
		if err := ws.Add(ctx, tagwatch.Watch{Ref: "registry.example/other:1"}); err == nil {
			t.Error("the watcher added a watch")
		}
	}
	if err := cs.Remove(ctx, "registry.example/app:1", ""); err != nil {
		t.Fatalf("the client cannot remove a watch: %v", err)
	}
}
