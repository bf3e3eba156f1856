package snapshot_test

import (
	"context"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// Share gives a builder the fleet's layers under its own names, on its own
// parents, without unpacking: the builder's tree is the image's, whatever
// the layers hold (whiteouts, opaque directories, devices, hard links), and
// it outlives the fleet's snapshots.
func TestShare(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			ctx := t.Context()
			s := openStore(t, kind)
			layers := referenceChain(t)
			if _, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(layers...), Source: newSource(layers...)}); err != nil {
				t.Fatal(err)
			}
			chain := snapshot.ChainIDs(eventsOf(layers...))
			b := s.Builders("")
			parent := ""
			for i, c := range chain {
				// The builder names its layers by chainID too: no collision.
				err := b.Share(ctx, snapshot.ShareRequest{ChainID: c, Name: c.String(), Parent: parent,
					Labels: map[string]string{"containerd.io/snapshot.ref": c.String()}})
				if err != nil {
					t.Fatalf("Share layer %d: %v", i, err)
				}
				info, err := b.Stat(ctx, c.String())
				if err != nil || info.Kind != snapshots.KindCommitted || info.Parent != parent || info.Labels[snapshot.LabelShared] != c.String() {
					t.Errorf("Stat(%s) = %+v, %v", c, info, err)
				}
				parent = c.String()
			}
			if err := b.Share(ctx, snapshot.ShareRequest{ChainID: chain[0], Name: chain[0].String()}); !errdefs.IsAlreadyExists(err) {
				t.Errorf("Share onto an existing name = %v, want AlreadyExists", err)
			}
			want := readTree(t, reference(t, layers...))
			top := b.StoreName(chain[len(chain)-1].String())
			if diff := cmp.Diff(want, viewTree(t, s, top)); diff != "" {
				t.Errorf("builder's tree (-want +got):\n%s", diff)
			}
			// The fleet's listing does not show the builder's names.
			if diff := cmp.Diff(sortedDigests(chain...), sortedSnapshots(t, s)); diff != "" {
				t.Errorf("fleet snapshots (-want +got):\n%s", diff)
			}
			// Pruning the fleet's snapshots leaves the builder's whole.
			res, err := s.Prune(ctx, nil)
			if err != nil || res.Snapshots != len(chain) {
				t.Fatalf("Prune = %+v, %v; want the fleet's %d snapshots removed", res, err, len(chain))
			}
			if diff := cmp.Diff(want, viewTree(t, s, top)); diff != "" {
				t.Errorf("builder's tree after the fleet's went (-want +got):\n%s", diff)
			}
			if err := b.Share(ctx, snapshot.ShareRequest{ChainID: chain[0], Name: "again"}); err == nil {
				t.Error("Share of a pruned snapshot succeeded")
			}
		})
	}
}

// A builder reaches only its own names: the fleet's snapshots can be
// neither seen, changed nor removed through Builders.
func TestBuildersNamespace(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	ctx := t.Context()
	s := openStore(t, snapshot.KindNative)
	ls, _ := smallLayers(t, 2, "ns")
	if _, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(ls...), Source: newSource(ls...)}); err != nil {
		t.Fatal(err)
	}
	chain := snapshot.ChainIDs(eventsOf(ls...))
	b := s.Builders("")
	fleet := chain[1].String()
	if _, err := b.Stat(ctx, fleet); !errdefs.IsNotFound(err) {
		t.Errorf("Stat of the fleet's %s = %v, want not found", fleet, err)
	}
	if err := b.Remove(ctx, fleet); !errdefs.IsNotFound(err) {
		t.Errorf("Remove of the fleet's snapshot = %v, want not found", err)
	}
	if _, err := b.Update(ctx, snapshots.Info{Name: fleet, Labels: map[string]string{"x": "y"}}); !errdefs.IsNotFound(err) {
		t.Errorf("Update of the fleet's snapshot = %v, want not found", err)
	}
	if _, err := b.Prepare(ctx, "child", fleet); !errdefs.IsNotFound(err) {
		t.Errorf("Prepare on the fleet's snapshot = %v, want not found", err)
	}
	// The builder's own snapshot of the same name is its own.
	if _, err := b.Prepare(ctx, "mine", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, fleet, "mine"); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if !s.Has(ctx, chain[1]) {
		t.Fatal("the fleet's snapshot went with the builder's of the same name")
	}
	var names []string
	if err := b.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		names = append(names, info.Name)
		return nil
	}); err != nil || len(names) != 0 {
		t.Errorf("Walk = %v, %v; want nothing of the fleet's", names, err)
	}

	// Two builder daemons: neither sees the other's snapshots.
	other := s.Builders("containerd")
	if _, err := b.Prepare(ctx, "buildkit-rw", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Stat(ctx, "buildkit-rw"); !errdefs.IsNotFound(err) {
		t.Errorf("another namespace's Stat = %v, want not found", err)
	}
	if err := other.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		t.Errorf("another namespace's Walk shows %s", info.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := other.Remove(ctx, "buildkit-rw"); !errdefs.IsNotFound(err) {
		t.Errorf("another namespace's Remove = %v, want not found", err)
	}
}

// Prune never removes a builder's snapshot, keeps what builders hold
// (parents), and honours containerd's gc labels, which Commit, Update and
// Stat keep.
func TestPruneKeepsBuilders(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	ctx := t.Context()
	s := openStore(t, snapshot.KindNative)
	b := s.Builders("")
	commit := func(name, parent string, labels map[string]string) {
		t.Helper()
		if _, err := b.Prepare(ctx, "tmp-"+name, parent, snapshots.WithLabels(map[string]string{snapshot.LabelGCRoot: "now"})); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(ctx, name, "tmp-"+name, snapshots.WithLabels(labels)); err != nil {
			t.Fatal(err)
		}
	}
	commit("base", "", nil)
	commit("target", "", nil)
	commit("holder", "", map[string]string{snapshot.LabelGCRefSnapshot + "stevedore": "target"})
	if _, err := b.Prepare(ctx, "container-rw", "base"); err != nil {
		t.Fatal(err)
	}
	info, err := b.Stat(ctx, "holder")
	if err != nil || info.Labels[snapshot.LabelGCRefSnapshot+"stevedore"] != "target" {
		t.Errorf("Stat(holder) labels = %v, %v; want the gc label Commit gave", info.Labels, err)
	}
	ref2 := snapshot.LabelGCRefSnapshot + "stevedore/2"
	if info, err := b.Update(ctx, snapshots.Info{Name: "holder", Labels: map[string]string{ref2: "base"}}, "labels."+ref2); err != nil ||
		info.Labels[ref2] != "base" || info.Labels[snapshot.LabelGCRefSnapshot+"stevedore"] != "target" {
		t.Errorf("Update(holder) = %v, %v; want both gc labels", info.Labels, err)
	}

	// The fleet's: x kept by the caller, y only by x's gc label, z by
	// nothing.
	fill := func(context.Context, string) error { return nil }
	if _, err := s.Build(ctx, "content-y", fill); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Build(ctx, "content-z", fill); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Build(ctx, "content-x", fill, snapshot.WithLabels(map[string]string{snapshot.LabelGCRefSnapshot + "overlayfs": "content-y"})); err != nil {
		t.Fatal(err)
	}

	res, err := s.Prune(ctx, []string{"content-x"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshots != 1 {
		t.Errorf("Prune removed %d snapshots, want 1 (content-z)", res.Snapshots)
	}
	for _, key := range []string{"content-x", "content-y"} {
		if !s.HasKey(ctx, key) {
			t.Errorf("%s was pruned", key)
		}
	}
	if s.HasKey(ctx, "content-z") {
		t.Error("content-z survived")
	}
	var names []string
	if err := b.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		names = append(names, info.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"base", "container-rw", "holder", "target"}, names); diff != "" {
		t.Errorf("builders' snapshots after Prune (-want +got):\n%s", diff)
	}
	// Filters work on the builder's names.
	var active []string
	if err := b.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		active = append(active, info.Name)
		return nil
	}, "kind==active", "name==target"); err != nil {
		t.Fatal(err)
	}
	slices.Sort(active)
	if diff := cmp.Diff([]string{"container-rw", "target"}, active); diff != "" {
		t.Errorf("Walk with filters (-want +got):\n%s", diff)
	}
}
