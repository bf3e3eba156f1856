package snapshotter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// logBuffer collects a replica's JSON logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// buildIDs are the build ids of the remote snapshot builds the logs show.
func (b *logBuffer) buildIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			BuildID string `json:"build_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "remote snapshot build" {
			ids = append(ids, rec.BuildID)
		}
	}
	return ids
}

// builderFleet is a fleet whose one snapshotter replica serves the
// snapshots API, and the proxy client a builder would use on it.
type builderFleet struct {
	*fleettest.Stack
	svc  *snapshotter.Service
	sn   snapshots.Snapshotter
	logs *logBuffer
	ref  string
	// layers, diffIDs and chainIDs are the "single" fixture's; manifest
	// is its manifest's digest.
	layers, diffIDs, chainIDs []digest.Digest
	manifest                  digest.Digest
}

func newBuilderFleet(t testing.TB, puller bool, mut ...func(*snapshotter.Config)) *builderFleet {
	t.Helper()
	fx := fleettest.LoadFixtures(t)
	single := fx.Images["single"]
	s := fleettest.New(t)
	if puller {
		s.Puller(t)
	}
	sock := filepath.Join(t.TempDir(), "snapshots.sock")
	logs := &logBuffer{}
	_, svc := s.Snapshotter(t, append([]func(*snapshotter.Config){func(c *snapshotter.Config) {
		c.SnapshotsSocket = sock
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		if os.Geteuid() != 0 {
			c.Snapshotter = snapshot.KindNative
		}
	}}, mut...)...)
	fleettest.WaitFor(t, func() bool { _, err := os.Stat(sock); return err == nil })
	sn, conn := dialSnapshots(t, sock)
	t.Cleanup(func() { _ = conn.Close() })
	f := &builderFleet{Stack: s, svc: svc, sn: sn, logs: logs}
	f.ref = s.Push(t, "single", "remote/single:1")
	s.Registry.Reset()
	for _, l := range single.Strings(t, "linux/amd64", "layers") {
		f.layers = append(f.layers, digest.Digest(l))
	}
	for _, d := range single.Strings(t, "linux/amd64", "diff_ids") {
		f.diffIDs = append(f.diffIDs, digest.Digest(d))
	}
	f.manifest = digest.Digest(single.Field(t, "linux/amd64", "manifest"))
	f.chainIDs = append([]digest.Digest(nil), f.diffIDs...)
	identity.ChainIDs(f.chainIDs)
	return f
}

// labelSet makes the labels a builder sends when it prepares layer i of
// ref (layers bottom first) under target.
type labelSet func(ref string, layers []digest.Digest, i int, target string) map[string]string

func buildkitLabels(ref string, layers []digest.Digest, i int, target string) map[string]string {
	rest := make([]string, 0, len(layers)-i)
	for _, l := range layers[i:] {
		rest = append(rest, l.String())
	}
	return map[string]string{
		snapshotter.LabelTargetRef:                               target,
		snapshotter.LabelStargzReference:                         ref,
		snapshotter.LabelStargzDigest:                            layers[i].String(),
		snapshotter.LabelStargzLayers:                            strings.Join(rest, ","),
		"containerd.io/snapshot/stargz/toc.digest":               "",
		"containerd.io/snapshot/remote/stargz.session.0.abcdef0": "session-id",
	}
}

// criLabels are containerd CRI's; its image-ref names the manifest too
// (<ref>@<digest>), which the caller appends.
func criLabels(ref string, layers []digest.Digest, i int, target string) map[string]string {
	rest := make([]string, 0, len(layers)-i)
	for _, l := range layers[i:] {
		rest = append(rest, l.String())
	}
	return map[string]string{
		snapshotter.LabelTargetRef:      target,
		snapshotter.LabelCRIImageRef:    ref,
		snapshotter.LabelCRILayerDigest: layers[i].String(),
		snapshotter.LabelCRIImageLayers: strings.Join(rest, ","),
	}
}

// prepareChain prepares every layer as a remote snapshot the way BuildKit
// does (bottom first, parent the layer below) under name(i), and fails
// unless each answer is AlreadyExists and Stat then shows the committed
// snapshot on the right parent.
func (f *builderFleet) prepareChain(t testing.TB, labels labelSet, name func(i int) string) {
	t.Helper()
	ctx := t.Context()
	parent := ""
	for i := range f.layers {
		target := name(i)
		key := fmt.Sprintf("buildkit/%d/tmp-%d %s", i, time.Now().UnixNano(), target)
		_, err := f.sn.Prepare(ctx, key, parent, snapshots.WithLabels(labels(f.ref, f.layers, i, target)))
		if !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare of layer %d = %v, want AlreadyExists", i, err)
		}
		info, err := f.sn.Stat(ctx, target)
		if err != nil {
			t.Fatalf("Stat(%s) after AlreadyExists: %v", target, err)
		}
		if info.Kind != snapshots.KindCommitted || info.Parent != parent {
			t.Errorf("Stat(%s) = kind %v parent %q, want committed on %q", target, info.Kind, info.Parent, parent)
		}
		if _, err := f.sn.Stat(ctx, key); !errdefs.IsNotFound(err) {
			t.Errorf("Stat of the Prepare's key %s = %v, want not found", key, err)
		}
		parent = target
	}
}

// readFile reads name in the root filesystem mounts show: from a bind
// mount's source, or by mounting (overlay: root only, which the fleet is
// given overlayfs under).
func readFile(t *testing.T, mounts []mount.Mount, name string) string {
	t.Helper()
	if len(mounts) == 1 && mounts[0].Type == "bind" {
		b, err := os.ReadFile(filepath.Join(mounts[0].Source, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mount.UnmountAll(dir, 0) }()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// blobGets counts the registry's GETs of each layer blob.
func (f *builderFleet) blobGets() map[digest.Digest]int {
	n := map[digest.Digest]int{}
	for _, r := range f.Registry.Requests() {
		if r.Method == "GET" && r.Kind == registrytest.KindBlob {
			for _, l := range f.layers {
				if strings.HasSuffix(r.Path, l.String()) {
					n[l]++
				}
			}
		}
	}
	return n
}

func TestRemoteSnapshots(t *testing.T) {
	t.Parallel()
	kinds := []snapshot.Kind{snapshot.KindNative}
	if os.Geteuid() == 0 {
		kinds = append(kinds, snapshot.KindOverlay)
	} else if os.Getenv("CI") != "" {
		t.Fatal("CI runs as root: overlayfs must be tested")
	} else {
		t.Log("not root: overlayfs is not tested, native is")
	}
	for _, kind := range kinds {
		for name, labels := range map[string]labelSet{"buildkit": buildkitLabels, "cri": criLabels} {
			t.Run(string(kind)+"/"+name, func(t *testing.T) {
				t.Parallel()
				f := newBuilderFleet(t, true, func(c *snapshotter.Config) { c.Snapshotter = kind })
				ctx := t.Context()
				f.prepareChain(t, labels, func(i int) string { return f.chainIDs[i].String() })

				// Each layer was fetched once, by the fleet.
				gets := f.blobGets()
				for _, l := range f.layers {
					if gets[l] != 1 {
						t.Errorf("layer %s fetched %d times, want 1", l, gets[l])
					}
				}
				// The top target holds the image's files.
				top := f.chainIDs[len(f.chainIDs)-1].String()
				mounts, err := f.sn.View(ctx, "view-of-top", top)
				if err != nil {
					t.Fatal(err)
				}
				for _, file := range []string{"etc/os-release", "app/releases/1/README", "app/releases/1/config.json"} {
					if got := readFile(t, mounts, file); got != singleFiles[file] {
						t.Errorf("%s = %q, want %q", file, got, singleFiles[file])
					}
				}
				if m, err := f.sn.Mounts(ctx, "view-of-top"); err != nil || len(m) != len(mounts) {
					t.Errorf("Mounts(view) = %v, %v", m, err)
				}
				// A container on top: a child Prepare, then its removal.
				if _, err := f.sn.Prepare(ctx, "container-rw", top); err != nil {
					t.Fatal(err)
				}
				// BuildKit drops its temporary labels with Update.
				info, err := f.sn.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{"containerd.io/gc.root": "x"}}, "labels.containerd.io/gc.root")
				if err != nil || info.Labels["containerd.io/gc.root"] != "x" || info.Labels[snapshotter.LabelTargetRef] != top {
					t.Errorf("Update of a remote snapshot = %+v, %v", info.Labels, err)
				}
				for _, key := range []string{"container-rw", "view-of-top"} {
					if err := f.sn.Remove(ctx, key); err != nil {
						t.Errorf("Remove(%s): %v", key, err)
					}
				}

				// The build was a build on the bus, with BuildKit's progress
				// labels, that the logs name.
				ids := f.logs.buildIDs()
				if len(ids) != 1 {
					t.Fatalf("remote snapshot builds in the logs: %v, want one for the three layers", ids)
				}
				// Followed as `stevedore watch` does, it ends at its snapshot.
				var seen []events.Event
				fctx, cancel := context.WithTimeoutCause(ctx, 10*time.Second, errors.New("the build did not end"))
				defer cancel()
				if err := client.Follow(fctx, f.Env.JS, ids[0], true, func(e events.Event) bool {
					seen = append(seen, e)
					return true
				}); err != nil {
					t.Fatal(err)
				}
				ready, ok := seen[len(seen)-1].Data.(events.SnapshotReady)
				if !ok || ready.ChainID != top || ready.Fetched != 3 || ready.Node == "" {
					t.Errorf("the build ended with %v", bustest.Summary(seen[len(seen)-1:]))
				}
				if req, ok := seen[0].Data.(events.SourceResolveRequested); !ok || req.SnapshotBy != ready.Node || req.Snapshot {
					t.Errorf("the build started with %+v", seen[0].Data)
				}
				types := map[events.Type]int{}
				progress := map[string]bool{}
				for _, e := range seen {
					types[e.Type()]++
					if p, ok := e.Data.(events.Progress); ok {
						progress[p.ID] = true
					}
				}
				for _, typ := range []events.Type{events.TypeSourceResolveRequested, events.TypeCacheKeyComputed, events.TypeCacheMiss} {
					if types[typ] == 0 {
						t.Errorf("no %s in the build: %v", typ, types)
					}
				}
				for _, l := range f.layers {
					if !progress[l.String()] || !progress["extracting "+l.String()] {
						t.Errorf("no BuildKit progress of %s: %v", l, progress)
					}
				}

				// A second builder, other names: AlreadyExists, no new blob.
				before := f.Registry.Count("GET", registrytest.KindBlob)
				f.prepareChain(t, labels, func(i int) string { return "second/" + f.chainIDs[i].String() })
				if after := f.Registry.Count("GET", registrytest.KindBlob); after != before {
					t.Errorf("second builder: blob GETs went from %d to %d", before, after)
				}
				// Its removal, bottom last, leaves the first builder's and the
				// fleet's snapshots whole.
				for i := len(f.layers) - 1; i >= 0; i-- {
					if err := f.sn.Remove(ctx, "second/"+f.chainIDs[i].String()); err != nil {
						t.Fatalf("Remove: %v", err)
					}
				}
				if !f.svc.Store().Has(ctx, f.chainIDs[2]) {
					t.Error("the fleet's snapshot went with the builder's")
				}
				mounts, err = f.sn.View(ctx, "view-again", top)
				if err != nil {
					t.Fatal(err)
				}
				if got := readFile(t, mounts, "etc/os-release"); got != singleFiles["etc/os-release"] {
					t.Errorf("after the second builder left: etc/os-release = %q", got)
				}
				if err := f.sn.Remove(ctx, "view-again"); err != nil {
					t.Fatal(err)
				}

				// The service's pruning (every record dropped) removes the
				// fleet's snapshots, never the builder's.
				idx, err := cacheindex.Open(ctx, f.Env.JS)
				if err != nil {
					t.Fatal(err)
				}
				res, err := f.svc.Prune(ctx, idx, 0)
				if err != nil || res.Snapshots != len(f.layers) {
					t.Errorf("Prune = %+v, %v; want the fleet's %d snapshots gone", res, err, len(f.layers))
				}
				if f.svc.Store().Has(ctx, f.chainIDs[0]) {
					t.Error("the fleet's snapshot survived a prune of everything")
				}
				for i, c := range f.chainIDs {
					if info, err := f.sn.Stat(ctx, c.String()); err != nil || info.Kind != snapshots.KindCommitted {
						t.Errorf("builder's layer %d after prune: %+v, %v", i, info, err)
					}
				}
				mounts, err = f.sn.View(ctx, "view-after-prune", top)
				if err != nil {
					t.Fatal(err)
				}
				if got := readFile(t, mounts, "app/releases/1/README"); got != singleFiles["app/releases/1/README"] {
					t.Errorf("after prune: app/releases/1/README = %q", got)
				}
			})
		}
	}
}

// applyAndCommit writes a file into the active snapshot key (as a
// builder applying a layer itself does) and commits it as name.
func applyAndCommit(t *testing.T, sn snapshots.Snapshotter, mounts []mount.Mount, key, name string) {
	t.Helper()
	ctx := t.Context()
	dir := ""
	if len(mounts) == 1 && mounts[0].Type == "bind" {
		dir = mounts[0].Source
	} else {
		dir = t.TempDir()
		if err := mount.All(mounts, dir); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = mount.UnmountAll(dir, 0) }()
	}
	if err := os.WriteFile(filepath.Join(dir, "pulled-by-the-builder"), []byte("yes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, name, key); err != nil {
		t.Fatal(err)
	}
	if info, err := sn.Stat(ctx, name); err != nil || info.Kind != snapshots.KindCommitted {
		t.Errorf("Stat(%s) = %+v, %v", name, info, err)
	}
}

// A layer the fleet cannot make is an ordinary active snapshot: the
// builder pulls it itself.
func TestRemoteSnapshotFallback(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		puller bool
		mut    func(*snapshotter.Config)
		labels func(f *builderFleet, target string) map[string]string
		before func(f *builderFleet)
	}{
		"unknown labels": {puller: true, labels: func(f *builderFleet, target string) map[string]string {
			return map[string]string{snapshotter.LabelTargetRef: target, "containerd.io/snapshot/remote/other.reference": f.ref}
		}},
		"missing image": {puller: true, labels: func(f *builderFleet, target string) map[string]string {
			return buildkitLabels(f.Registry.Host()+"/remote/missing:1", f.layers, 0, target)
		}},
		"registry refuses": {puller: true, labels: func(f *builderFleet, target string) map[string]string {
			return criLabels(f.ref, f.layers, 0, target)
		}, before: func(f *builderFleet) {
			f.Registry.Fail(registrytest.FailRule{Kind: registrytest.KindManifest, Status: 401, Times: -1})
		}},
		"timeout": {puller: false, mut: func(c *snapshotter.Config) { c.RemoteTimeout = time.Second }, labels: func(f *builderFleet, target string) map[string]string {
			return buildkitLabels(f.ref, f.layers, 0, target)
		}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var muts []func(*snapshotter.Config)
			if tc.mut != nil {
				muts = append(muts, tc.mut)
			}
			f := newBuilderFleet(t, tc.puller, muts...)
			if tc.before != nil {
				tc.before(f)
			}
			target := f.chainIDs[0].String()
			key := "buildkit/1/tmp-fallback " + target
			mounts, err := f.sn.Prepare(t.Context(), key, "", snapshots.WithLabels(tc.labels(f, target)))
			if err != nil {
				t.Fatalf("Prepare = %v, want an ordinary active snapshot", err)
			}
			if info, err := f.sn.Stat(t.Context(), key); err != nil || info.Kind != snapshots.KindActive {
				t.Fatalf("Stat(%s) = %+v, %v; want active", key, info, err)
			}
			applyAndCommit(t, f.sn, mounts, key, target)
			if gets := f.blobGets(); len(gets) != 0 {
				t.Errorf("the fleet fetched layers: %v", gets)
			}
		})
	}
}

// Builders asking at once for one image's layers share one build: five
// concurrent Prepares of the bottom layer (five builders) and the chain
// made once, each blob fetched once.
func TestRemoteSnapshotsShareOneBuild(t *testing.T) {
	t.Parallel()
	f := newBuilderFleet(t, true)
	const builders = 5
	errs := make(chan error, builders)
	for b := range builders {
		go func() {
			target := fmt.Sprintf("b%d/%s", b, f.chainIDs[0])
			_, err := f.sn.Prepare(t.Context(), "tmp "+target, "", snapshots.WithLabels(buildkitLabels(f.ref, f.layers, 0, target)))
			errs <- err
		}()
	}
	for range builders {
		if err := <-errs; !errdefs.IsAlreadyExists(err) {
			t.Errorf("Prepare = %v, want AlreadyExists", err)
		}
	}
	if ids := f.logs.buildIDs(); len(ids) != 1 {
		t.Errorf("builds for %d concurrent Prepares: %v, want one", builders, ids)
	}
	gets := f.blobGets()
	for _, l := range f.layers {
		if gets[l] != 1 {
			t.Errorf("layer %s fetched %d times, want 1", l, gets[l])
		}
	}
	// The layers above follow without another build.
	for b := range builders {
		prefix := fmt.Sprintf("b%d/", b)
		for i := 1; i < len(f.layers); i++ {
			target := prefix + f.chainIDs[i].String()
			_, err := f.sn.Prepare(t.Context(), "tmp "+target, prefix+f.chainIDs[i-1].String(), snapshots.WithLabels(buildkitLabels(f.ref, f.layers, i, target)))
			if !errdefs.IsAlreadyExists(err) {
				t.Errorf("Prepare of %s = %v, want AlreadyExists", target, err)
			}
		}
	}
	if ids := f.logs.buildIDs(); len(ids) != 1 {
		t.Errorf("builds: %v, want still one", ids)
	}
}

// One socket per builder daemon, each its own namespace: a daemon never
// sees (so its metadata gc never removes) another's snapshots, and both
// share the fleet's layers.
func TestSnapshotsSocketsPerBuilder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	second := filepath.Join(dir, "containerd.sock")
	f := newBuilderFleet(t, true, func(c *snapshotter.Config) { c.SnapshotsSockets = []string{second} })
	f.prepareChain(t, buildkitLabels, func(i int) string { return f.chainIDs[i].String() })
	before := f.Registry.Count("GET", registrytest.KindBlob)

	fleettest.WaitFor(t, func() bool { _, err := os.Stat(second); return err == nil })
	other, conn := dialSnapshots(t, second)
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := other.Stat(t.Context(), f.chainIDs[0].String()); !errdefs.IsNotFound(err) {
		t.Errorf("the other daemon's Stat of the first's snapshot = %v, want not found", err)
	}
	if err := other.Walk(t.Context(), func(_ context.Context, info snapshots.Info) error {
		t.Errorf("the other daemon sees %s", info.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g := *f
	g.sn = other
	g.prepareChain(t, criLabels, func(i int) string { return f.chainIDs[i].String() })
	if after := f.Registry.Count("GET", registrytest.KindBlob); after != before {
		t.Errorf("the second daemon's chain: blob GETs went from %d to %d", before, after)
	}
	// The same namespace twice is refused.
	cfg := snapshotter.Config{DataDir: dir, SnapshotsSocket: filepath.Join(dir, "a", "x.sock"), SnapshotsSockets: []string{filepath.Join(dir, "b", "x.sock")}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "one namespace") {
		t.Errorf("two sockets of one namespace: Validate = %v", err)
	}
}

// A builder that unpacked the bottom layer itself (under the name
// containerd's metadata layer gives it) gets the layers above as remote
// snapshots on it.
func TestRemoteSnapshotOnBuildersOwnParent(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	f := newBuilderFleet(t, true, func(c *snapshotter.Config) { c.Observe.Metrics = reg })
	ctx := t.Context()
	own := "buildkit/7/" + f.chainIDs[0].String()
	if _, err := f.sn.Prepare(ctx, "buildkit/6/extract", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.sn.Commit(ctx, own, "buildkit/6/extract"); err != nil {
		t.Fatal(err)
	}
	target := f.chainIDs[1].String()
	_, err := f.sn.Prepare(ctx, "tmp "+target, own, snapshots.WithLabels(buildkitLabels(f.ref, f.layers, 1, target)))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare on the builder's own parent = %v, want AlreadyExists", err)
	}
	if info, err := f.sn.Stat(ctx, target); err != nil || info.Parent != own {
		t.Errorf("Stat(%s) = %+v, %v; want parent %s", target, info, err, own)
	}
	// A parent that is some other snapshot is refused: the builder pulls.
	if _, err := f.sn.Prepare(ctx, "buildkit/8/x", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.sn.Commit(ctx, "unrelated", "buildkit/8/x"); err != nil {
		t.Fatal(err)
	}
	target2 := "other/" + f.chainIDs[1].String()
	if _, err := f.sn.Prepare(ctx, "tmp2", "unrelated", snapshots.WithLabels(buildkitLabels(f.ref, f.layers, 1, target2))); err != nil {
		t.Errorf("Prepare on an unrelated parent = %v, want an ordinary active snapshot", err)
	}
	// One answered from the fleet, one fallback, in the metrics.
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "stevedore_snapshotter_remote_prepares_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if diff := cmp.Diff(map[string]float64{"remote": 1, "fallback": 1}, got); diff != "" {
		t.Errorf("stevedore_snapshotter_remote_prepares_total (-want +got):\n%s", diff)
	}
}
