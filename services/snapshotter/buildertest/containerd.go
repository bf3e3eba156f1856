package buildertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ProxyPluginName is the name Containerd gives the snapshots socket: ctr
// and the Go client name it with --snapshotter / WithSnapshotter.
const ProxyPluginName = "stevedore"

// Namespace is the containerd namespace the tests use.
const Namespace = "buildertest"

// containerdStartTimeout bounds how long containerd may take to listen.
const containerdStartTimeout = 60 * time.Second

// Containerd is a containerd daemon a test started, with its own root,
// state and socket.
type Containerd struct {
	// Address is its gRPC socket's path.
	Address string
	// Process is the daemon.
	Process *Process
	ctr     string
}

// StartContainerd starts the installed containerd with a fresh root, state
// and socket, the CRI plugin off, and the snapshots socket at snapshots as
// the proxy snapshotter ProxyPluginName, and waits until it listens. It
// needs root, containerd and ctr; without them the test is skipped, or
// fails with CI set.
func StartContainerd(t testing.TB, snapshots string) *Containerd {
	t.Helper()
	RequireRoot(t)
	bin := Tool(t, "containerd")
	ctr := Tool(t, "ctr")
	dir := t.TempDir()
	sockDir := SocketDir(t)
	addr := filepath.Join(sockDir, "containerd.sock")
	// Version 2 is what containerd 1.6 reads (and 2.x still accepts).
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[metrics]
  address = ""
[proxy_plugins.%s]
  type = "snapshot"
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(sockDir, "state"), addr, addr+".ttrpc", addr+".debug", ProxyPluginName, snapshots)
	cfgFile := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := Start(t, bin, "--config", cfgFile)
	if err := p.WaitSocket(t.Context(), addr, containerdStartTimeout); err != nil {
		t.Fatal(err)
	}
	return &Containerd{Address: addr, Process: p, ctr: ctr}
}

// Ctr runs ctr against the daemon in Namespace and returns its combined
// output; it fails with the output when ctr does.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"--address", c.Address, "--namespace", Namespace}, args...)
	out, err := exec.CommandContext(ctx, c.ctr, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}
