package snapshotter_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// needRoot skips a test that needs root (mounts, overlayfs, chown), or
// fails it when CI is set: there it must run.
func needRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("needs root (%s), and CI is set", why)
	}
	t.Skipf("needs root (%s)", why)
}

// dialSnapshots connects containerd's proxy client (what buildkitd and
// containerd use) to the socket at path.
func dialSnapshots(t testing.TB, path string) (snapshots.Snapshotter, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "stevedore"), conn
}

// servedStore opens a Store of kind at root, serves its builders' API on a
// socket in root and returns the proxy client on it.
func servedStore(ctx context.Context, root string, kind snapshot.Kind) (snapshots.Snapshotter, func() error, error) {
	store, err := snapshot.Open(ctx, filepath.Join(root, "data"), kind)
	if err != nil {
		return nil, nil, err
	}
	srv, err := snapshotter.ListenSnapshots(ctx, store.Builders(""), filepath.Join(root, "snapshots.sock"))
	if err != nil {
		_ = store.Close()
		return nil, nil, err
	}
	conn, err := grpc.NewClient("unix://"+srv.Path(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		_ = srv.Close()
		_ = store.Close()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "stevedore")
	return sn, func() error {
		_ = conn.Close()
		_ = srv.Close()
		return store.Close()
	}, nil
}

// TestSnapshotsAPIConformance runs containerd's own snapshotter suite
// through the gRPC proxy client against the served socket.
func TestSnapshotsAPIConformance(t *testing.T) {
	needRoot(t, "containerd's snapshotter suite mounts what it prepares")
	for _, kind := range []snapshot.Kind{snapshot.KindNative, snapshot.KindOverlay} {
		t.Run(string(kind), func(t *testing.T) {
			testsuite.SnapshotterSuite(t, string(kind), func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
				return servedStore(ctx, root, kind)
			})
		})
	}
}

// The socket is root's alone (0600), or its group's too (0660); a stale
// socket is replaced at start, the socket removed at stop, and any other
// file in the way is left alone.
func TestSnapshotsSocketFile(t *testing.T) {
	t.Parallel()
	needRoot(t, "the store extracts as root")
	dir := t.TempDir()
	store, err := snapshot.Open(t.Context(), filepath.Join(dir, "data"), snapshot.KindNative)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	path := filepath.Join(dir, "s.sock")
	for _, tc := range []struct {
		opts []snapshotter.SocketOption
		mode os.FileMode
		gid  int
	}{
		{mode: 0o600, gid: 0},
		{opts: []snapshotter.SocketOption{snapshotter.WithSocketGroup("4242")}, mode: 0o660, gid: 4242},
	} {
		// Twice: the second start finds the first's socket (as a killed
		// process leaves it) and replaces it.
		first, err := snapshotter.ListenSnapshots(t.Context(), store.Builders(""), path, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := snapshotter.ListenSnapshots(t.Context(), store.Builders(""), path, tc.opts...)
		if err != nil {
			t.Fatalf("start over a stale socket: %v", err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != tc.mode || st == nil || int(st.Gid) != tc.gid {
			t.Errorf("socket mode %v gid %v, want %v gid %d", fi.Mode().Perm(), st.Gid, tc.mode, tc.gid)
		}
		sn, conn := dialSnapshots(t, path)
		if _, err := sn.Prepare(t.Context(), "k", ""); err != nil {
			t.Errorf("Prepare through the socket: %v", err)
		}
		_ = conn.Close()
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		_ = first.Close()
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket left after Close: %v", err)
		}
		if err := store.Builders("").Remove(t.Context(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if srv, err := snapshotter.ListenSnapshots(t.Context(), store.Builders(""), path); err == nil {
		_ = srv.Close()
		t.Error("a regular file in the way was replaced")
	}
}
