package buildertest

import (
	"net"
	"path/filepath"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"google.golang.org/grpc"
)

// ServeOverlay serves a plain containerd overlayfs snapshotter, rooted in
// the test's temporary directory, with containerd's snapshots gRPC API on a
// new unix socket, and returns the socket's path. It has no remote
// snapshots: a builder on it fetches and unpacks every layer itself. It
// needs root; without it the test is skipped, or fails with CI set.
func ServeOverlay(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	sn, err := overlay.NewSnapshotter(filepath.Join(t.TempDir(), "overlay"))
	if err != nil {
		t.Fatalf("overlay snapshotter: %v", err)
	}
	sock := filepath.Join(SocketDir(t), "snapshots.sock")
	var lc net.ListenConfig
	l, err := lc.Listen(t.Context(), "unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		_ = sn.Close()
	})
	return sock
}
