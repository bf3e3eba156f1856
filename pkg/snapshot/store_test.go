//go:build linux

package snapshot_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
	"github.com/containerd/errdefs"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// TestOpenRecoversAfterCrash leaves what a process killed mid-Unpack
// leaves (active extract- snapshots, one with files in it, a view, a
// half-written ingest and one killed before its data file), and checks that the next Open removes all of it and
// keeps the committed snapshots.
func TestOpenRecoversAfterCrash(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			ctx := t.Context()
			root := t.TempDir()
			ls, _ := smallLayers(t, 3, "crash")
			chain := snapshot.ChainIDs(eventsOf(ls...))

			s, err := snapshot.Open(ctx, root, kind)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(ls[:2]...), Source: newSource(ls...)}); err != nil {
				t.Fatal(err)
			}
			sn := s.Snapshotter()
			mounts, err := sn.Prepare(ctx, "extract-0123456789ab-"+chain[2].String(), chain[1].String())
			if err != nil {
				t.Fatal(err)
			}
			dst := mounts[0].Source
			for _, o := range mounts[0].Options {
				if v, ok := strings.CutPrefix(o, "upperdir="); ok {
					dst = v
				}
			}
			if err := os.WriteFile(filepath.Join(dst, "half-extracted"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := sn.Prepare(ctx, "extract-ba9876543210-"+ls[0].DiffID.String(), ""); err != nil {
				t.Fatal(err)
			}
			// Not the store's own: a builder's view and a container's
			// writable layer, which must survive the restart.
			if _, err := sn.View(ctx, "some-view", chain[0].String()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Builders("").Prepare(ctx, "container-rw", ""); err != nil {
				t.Fatal(err)
			}
			w, err := content.OpenWriter(ctx, s.Content(), content.WithRef("fetch-"+ls[2].Blob.Digest.String()), content.WithDescriptor(ls[2].Blob))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(ls[2].blob[:len(ls[2].blob)/2]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil { // closed, not committed: the ingest stays
				t.Fatal(err)
			}
			if refs := ingests(t, s); len(refs) != 1 {
				t.Fatalf("ingests before the crash = %v, want one", refs)
			}
			// An ingest killed before its data file was made, which the
			// content store's listing cannot read.
			killed := filepath.Join(root, "content", "ingest", "killed-before-data")
			if err := os.MkdirAll(killed, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(killed, "ref"), []byte("fetch-killed"), 0o644); err != nil {
				t.Fatal(err)
			}

			// The dir is in use: a second Open fails.
			if other, err := snapshot.Open(ctx, root, kind); !errors.Is(err, snapshot.ErrLocked) {
				if other != nil {
					_ = other.Close()
				}
				t.Fatalf("second Open = %v, want ErrLocked", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s2 := openStoreAt(t, root, kind)
			committed, other := snapshotNames(t, s2)
			slices.Sort(committed)
			want := []string{chain[0].String(), chain[1].String()}
			slices.Sort(want)
			if diff := cmp.Diff(want, committed); diff != "" {
				t.Errorf("committed snapshots after recovery (-want +got):\n%s", diff)
			}
			slices.Sort(other)
			if diff := cmp.Diff([]string{s.Builders("").StoreName("container-rw"), "some-view"}, other); diff != "" {
				t.Errorf("non-committed snapshots after recovery: only the extractions go (-want +got):\n%s", diff)
			}
			if refs := ingests(t, s2); len(refs) != 0 {
				t.Errorf("leftover ingests after recovery: %v", refs)
			}
			// Nothing of the leftovers stays on disk either.
			dirs, err := os.ReadDir(filepath.Join(root, "snapshots", string(kind), "snapshots"))
			if err != nil {
				t.Fatal(err)
			}
			wantDirs := 4 // 2 committed, the view, the builder's
			if kind == snapshot.KindNative {
				wantDirs = 3 // a native view binds its parent's directory
			}
			if len(dirs) != wantDirs {
				t.Errorf("snapshot directories after recovery: %d, want %d", len(dirs), wantDirs)
			}

			// The recovered store finishes the chain.
			src := newSource(ls...)
			res, err := s2.Unpack(ctx, snapshot.Request{Layers: eventsOf(ls...), Source: src})
			if err != nil {
				t.Fatalf("Unpack after recovery: %v", err)
			}
			if res.Reused != 2 || res.Extracted != 1 {
				t.Errorf("Unpack after recovery = %+v, want 2 reused and 1 extracted", res)
			}
			if diff := cmp.Diff(readTree(t, reference(t, ls...)), viewTree(t, s2, res.Key)); diff != "" {
				t.Errorf("snapshot after recovery (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotters are set up as for extraction")

	t.Run("lock released on Close", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		root := t.TempDir()
		s, err := snapshot.Open(ctx, root, snapshot.KindNative)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := snapshot.Open(ctx, root, snapshot.KindNative); !errors.Is(err, snapshot.ErrLocked) {
			t.Fatalf("second Open = %v, want ErrLocked", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := snapshot.Open(ctx, root, snapshot.KindNative)
		if err != nil {
			t.Fatalf("Open after Close: %v", err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unknown kind fails and releases the lock", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		root := t.TempDir()
		if s, err := snapshot.Open(ctx, root, "zfs"); err == nil {
			_ = s.Close()
			t.Fatal("Open accepted snapshotter kind zfs")
		}
		s, err := snapshot.Open(ctx, root, snapshot.KindNative)
		if err != nil {
			t.Fatalf("Open after a failed Open: %v", err)
		}
		_ = s.Close()
	})

	t.Run("auto", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		want := snapshot.KindNative
		if overlayutils.Supported(t.TempDir()) == nil {
			want = snapshot.KindOverlay
		}
		for _, kind := range []snapshot.Kind{snapshot.KindAuto, ""} {
			root := t.TempDir()
			s, err := snapshot.Open(ctx, root, kind)
			if err != nil {
				t.Fatal(err)
			}
			if s.Kind() != want || s.Root() != root {
				t.Errorf("Open(%q): Kind %s, Root %s; want %s, %s", kind, s.Kind(), s.Root(), want, root)
			}
			_ = s.Close()
		}
	})
}

// TestPrune: chain A has three layers, chain B shares A's first two.
func TestPrune(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			ctx := t.Context()
			s := openStore(t, kind)
			a, _ := smallLayers(t, 3, "a")
			extra, _ := smallLayers(t, 1, "b")
			b := append(slices.Clone(a[:2]), extra[0])
			chainA, chainB := snapshot.ChainIDs(eventsOf(a...)), snapshot.ChainIDs(eventsOf(b...))
			for _, ls := range [][]layer{a, b} {
				if _, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(ls...), Source: newSource(ls...)}); err != nil {
					t.Fatal(err)
				}
			}
			if got := sortedSnapshots(t, s); !cmp.Equal(got, sortedDigests(chainA[0], chainA[1], chainA[2], chainB[2])) {
				t.Fatalf("Snapshots before pruning = %v", got)
			}

			res, err := s.Prune(ctx, []string{chainB[2].String()})
			if err != nil {
				t.Fatal(err)
			}
			want := snapshot.PruneResult{Snapshots: 1, Blobs: 1, Bytes: int64(len(a[2].tar) + len(a[2].blob))}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("Prune(keep B) (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(sortedDigests(chainB...), sortedSnapshots(t, s)); diff != "" {
				t.Errorf("Snapshots after Prune(keep B) (-want +got):\n%s", diff)
			}
			if s.Has(ctx, chainA[2]) {
				t.Error("A's top snapshot survived")
			}
			checkBlobs(t, s, b, a[2:])
			if diff := cmp.Diff(readTree(t, reference(t, b...)), viewTree(t, s, chainB[2].String())); diff != "" {
				t.Errorf("B after pruning A (-want +got):\n%s", diff)
			}

			// A again: only its top layer is fetched.
			src := newSource(a...)
			if r, err := s.Unpack(ctx, snapshot.Request{Layers: eventsOf(a...), Source: src}); err != nil || r.Reused != 2 || len(r.Fetched) != 1 {
				t.Errorf("Unpack A after pruning = %+v, %v; want 2 reused and 1 fetched", r, err)
			}

			// A view (a mounted root filesystem) pins its snapshot and those
			// below it.
			if _, err := s.Snapshotter().View(ctx, "pinned", chainA[1].String()); err != nil {
				t.Fatal(err)
			}
			res, err = s.Prune(ctx, nil)
			if err != nil {
				t.Fatalf("Prune with a view: %v", err)
			}
			if res.Snapshots != 2 || res.Blobs != 2 {
				t.Errorf("Prune(keep nothing) with a view = %+v, want 2 snapshots and 2 blobs", res)
			}
			if diff := cmp.Diff(sortedDigests(chainA[:2]...), sortedSnapshots(t, s)); diff != "" {
				t.Errorf("Snapshots after Prune with a view (-want +got):\n%s", diff)
			}
			checkBlobs(t, s, a[:2], append(a[2:], extra...))
			if err := s.Snapshotter().Remove(ctx, "pinned"); err != nil {
				t.Fatal(err)
			}

			res, err = s.Prune(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Snapshots != 2 || res.Blobs != 2 {
				t.Errorf("Prune(keep nothing) = %+v, want 2 snapshots and 2 blobs", res)
			}
			if got := sortedSnapshots(t, s); len(got) != 0 {
				t.Errorf("Snapshots after Prune(keep nothing) = %v", got)
			}
			checkBlobs(t, s, nil, append(a, extra...))
			if _, other := snapshotNames(t, s); len(other) != 0 {
				t.Errorf("other snapshots after pruning: %v", other)
			}

			// Pruning an empty store does nothing.
			if res, err := s.Prune(ctx, []string{chainA[2].String()}); err != nil || res != (snapshot.PruneResult{}) {
				t.Errorf("Prune of an empty store = %+v, %v", res, err)
			}
		})
	}
}

func TestSnapshotsEmpty(t *testing.T) {
	t.Parallel()
	needKind(t, snapshot.KindNative)
	s := openStore(t, snapshot.KindNative)
	got, err := s.Snapshots(t.Context())
	if err != nil || len(got) != 0 {
		t.Errorf("Snapshots of a new store = %v, %v", got, err)
	}
	if s.Has(t.Context(), digest.FromString("nothing")) {
		t.Error("Has on a new store")
	}
	if res, err := s.Unpack(t.Context(), snapshot.Request{}); err != nil || !cmp.Equal(res, snapshot.Result{}) {
		t.Errorf("Unpack of no layers = %+v, %v", res, err)
	}
}

func sortedSnapshots(t *testing.T, s *snapshot.Store) []digest.Digest {
	t.Helper()
	got, err := s.Snapshots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func sortedDigests(ds ...digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

// checkBlobs checks that the blobs of kept are in the content store and
// those of gone are not.
func checkBlobs(t *testing.T, s *snapshot.Store, kept, gone []layer) {
	t.Helper()
	for _, l := range kept {
		if _, err := s.Content().Info(t.Context(), l.Blob.Digest); err != nil {
			t.Errorf("blob %s: %v, want kept", l.Blob.Digest, err)
		}
	}
	for _, l := range gone {
		if _, err := s.Content().Info(t.Context(), l.Blob.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("blob %s: %v, want removed", l.Blob.Digest, err)
		}
	}
}
