package snapshotter_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// A snapshotter killed with SIGKILL in the middle of a layer leaves nothing
// a later request would trust, and the pull completes once a snapshotter
// runs again on the same data dir.
func TestKillNineMidLayerThenRestart(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	bin := filepath.Join(t.TempDir(), "snapshotter")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/stevedore-dev/stevedore/services/snapshotter/cmd/snapshotter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build snapshotter: %v\n%s", err, out)
	}

	s := fleettest.New(t)
	s.Puller(t)
	ref := buildImage(t, s, "crash/big:1", 2<<20, func(*ocispec.Manifest, *ocispec.Image) {})
	s.Registry.ThrottleBlobs(256 << 10) // the 2 MiB layer takes about 8 s
	dataDir := t.TempDir()
	httpAddr := freeAddr(t)
	start := func() *exec.Cmd {
		cmd := exec.CommandContext(t.Context(), bin, "-nats", s.Env.Server.ClientURL(), "-data-dir", dataDir,
			"-node", "crashy", "-provision=false", "-lease-ttl", "2s", "-docker-config", t.TempDir(), "-http", httpAddr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	first := start()
	rec := s.Pull(t, "docker-image://"+ref, "linux/amd64")
	var layer events.Layer
	fleettest.WaitFor(t, func() bool {
		for _, e := range rec.OfType(events.TypeSnapshotRequested) {
			layer = e.Data.(events.SnapshotRequested).CacheOpts.Layers[0]
		}
		for _, e := range rec.OfType(events.TypeProgress) {
			if p := e.Data.(events.Progress); p.ID == layer.Blob.Digest.String() && p.Current > 0 && p.Completed == nil {
				return true
			}
		}
		return false
	})
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	// Nothing half-made is visible to containerd itself.
	cs, err := local.NewStore(filepath.Join(dataDir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Info(t.Context(), layer.Blob.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("blob of the interrupted layer is in the content store: %v", err)
	}
	chainID := snapshot.ChainIDs([]events.Layer{layer})[0]
	for _, kind := range []snapshot.Kind{snapshot.KindOverlay, snapshot.KindNative} {
		root := filepath.Join(dataDir, "snapshots", string(kind))
		if _, err := os.Stat(root); err == nil {
			if err := statSnapshot(t, kind, root, chainID.String()); !errdefs.IsNotFound(err) {
				t.Errorf("%s snapshot %s exists after the kill: %v", kind, chainID, err)
			}
		}
	}

	s.Registry.ThrottleBlobs(0)
	second := start()
	t.Cleanup(func() {
		_ = second.Process.Signal(syscall.SIGTERM)
		_ = second.Wait()
	})
	ready := fleettest.Ready(t, rec)
	if ready.Node != "crashy" || ready.ChainID != chainID.String() {
		t.Errorf("ready = %+v", ready)
	}
	if n := len(rec.OfType(events.TypeSnapshotReady)); n != 1 {
		t.Errorf("%d snapshot.ready events", n)
	}
	// The replica is ready, says so to its container healthcheck, and
	// counts what it fetched and unpacked.
	check := exec.CommandContext(t.Context(), bin, "-healthcheck", "-http", httpAddr)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("-healthcheck of the ready replica: %v %s", err, out)
	}
	metrics := httpGet(t, "http://"+httpAddr+"/metrics")
	for _, want := range []string{"stevedore_snapshotter_fetched_bytes_total", "stevedore_snapshotter_unpacked_bytes_total",
		`stevedore_snapshotter_events_handled_total{event_type="snapshot.requested",outcome="ok"} 1`, "stevedore_snapshotter_consumer_pending_messages"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	_ = second.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("snapshotter exited with %v after SIGTERM, want a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("snapshotter did not stop on SIGTERM")
	}
	store, err := snapshot.Open(t.Context(), dataDir, snapshot.KindAuto)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if !store.Has(t.Context(), chainID) {
		t.Error("the completed snapshot is not committed")
	}
	if err := store.Materialize(t.Context(), []events.Layer{layer}, t.TempDir(), nil); err != nil {
		t.Errorf("the kept blob does not verify: %v", err)
	}
}

// statSnapshot opens containerd's own snapshotter of kind on root and
// stats key.
func statSnapshot(t *testing.T, kind snapshot.Kind, root, key string) error {
	t.Helper()
	var sn snapshots.Snapshotter
	var err error
	if kind == snapshot.KindOverlay {
		sn, err = overlay.NewSnapshotter(root)
	} else {
		sn, err = native.NewSnapshotter(root)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sn.Close() }()
	_, err = sn.Stat(t.Context(), key)
	return err
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(data)
}
