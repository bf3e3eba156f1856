package snapshotter_test

import (
	"context"
	"os"
	"path/filepath"
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
	srv, err := snapshotter.ListenSnapshots(ctx, store.Builders(), filepath.Join(root, "snapshots.sock"))
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
