package buildertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ProxySnapshotterName is the name buildkitd's OCI worker gives a proxy
// snapshotter whose remote snapshots it should use: BuildKit asks a
// snapshotter for remote snapshots only when it is called "stargz"
// (cache/refs.go, withRemoteSnapshotLabelsStargzMode).
const ProxySnapshotterName = "stargz"

// buildkitdStartTimeout bounds how long buildkitd may take to listen.
const buildkitdStartTimeout = 60 * time.Second

// BuildkitdOption configures StartBuildkitd.
type BuildkitdOption func(*buildkitdOptions) error

type buildkitdOptions struct {
	proxySocket string
	plainHTTP   []string
}

func makeBuildkitdOptions(opts []BuildkitdOption) (buildkitdOptions, error) {
	var o buildkitdOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// WithProxySnapshotter puts the OCI worker on the snapshots socket at path
// (a file path, no unix://), named ProxySnapshotterName. The default is
// buildkitd's own overlayfs snapshotter in its root.
func WithProxySnapshotter(path string) BuildkitdOption {
	return func(o *buildkitdOptions) error {
		if path == "" {
			return errors.New("proxy snapshotter: empty socket path")
		}
		o.proxySocket = path
		return nil
	}
}

// WithPlainHTTPRegistry makes buildkitd reach the registry host
// ("127.0.0.1:PORT") over plain http. The default is https for every
// registry.
func WithPlainHTTPRegistry(host string) BuildkitdOption {
	return func(o *buildkitdOptions) error {
		if host == "" {
			return errors.New("plain http registry: empty host")
		}
		o.plainHTTP = append(o.plainHTTP, host)
		return nil
	}
}

// Buildkitd is a buildkitd a test started, with its own root and socket.
type Buildkitd struct {
	// Addr is its gRPC address, unix://….
	Addr string
	// Root is its state directory.
	Root string
	// Process is the daemon.
	Process  *Process
	buildctl string
}

// StartBuildkitd starts buildkitd (OCI worker, runc, no containerd worker,
// host networking, no gc) with a fresh root, and waits until it listens.
// It needs root, bin/buildkitd, bin/buildctl and runc; without them the
// test is skipped, or fails with CI set.
func StartBuildkitd(t testing.TB, opts ...BuildkitdOption) *Buildkitd {
	t.Helper()
	o, err := makeBuildkitdOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	RequireRoot(t)
	bin := Tool(t, "buildkitd")
	buildctl := Tool(t, "buildctl")
	runc := Tool(t, "runc")

	root := filepath.Join(t.TempDir(), "buildkitd-root")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(SocketDir(t), "buildkitd.sock")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "root = %q\n", root)
	fmt.Fprintf(&cfg, "[grpc]\n  address = [%q]\n", "unix://"+sock)
	cfg.WriteString("[worker.containerd]\n  enabled = false\n")
	cfg.WriteString("[worker.oci]\n  enabled = true\n  gc = false\n  networkMode = \"host\"\n")
	fmt.Fprintf(&cfg, "  binary = %q\n", runc)
	if o.proxySocket != "" {
		fmt.Fprintf(&cfg, "  snapshotter = %q\n  proxySnapshotterPath = %q\n", ProxySnapshotterName, o.proxySocket)
	} else {
		cfg.WriteString("  snapshotter = \"overlayfs\"\n")
	}
	for _, h := range o.plainHTTP {
		fmt.Fprintf(&cfg, "[registry.%q]\n  http = true\n  insecure = true\n", h)
	}
	cfgFile := filepath.Join(t.TempDir(), "buildkitd.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := Start(t, bin, "--config", cfgFile)
	if err := p.WaitSocket(t.Context(), sock, buildkitdStartTimeout); err != nil {
		t.Fatal(err)
	}
	return &Buildkitd{Addr: "unix://" + sock, Root: root, Process: p, buildctl: buildctl}
}

// Build is one dockerfile.v0 build.
type Build struct {
	// Context is the build context directory; its Dockerfile is the one
	// built.
	Context string
	// Output is a directory the result is written to (buildctl's
	// --output type=local); empty builds without output.
	Output string
}

// BuildResult is what Build reports.
type BuildResult struct {
	// Duration is buildctl's wall time.
	Duration time.Duration
	// Log is buildctl's output (plain progress).
	Log string
}

// Build runs buildctl build against the daemon. It fails when buildctl
// does, with its output.
func (b *Buildkitd) Build(ctx context.Context, spec Build) (BuildResult, error) {
	args := []string{"--addr", b.Addr, "build", "--progress", "plain",
		"--frontend", "dockerfile.v0",
		"--local", "context=" + spec.Context, "--local", "dockerfile=" + spec.Context}
	if spec.Output != "" {
		args = append(args, "--output", "type=local,dest="+spec.Output)
	}
	cmd := exec.CommandContext(ctx, b.buildctl, args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := BuildResult{Duration: time.Since(start), Log: string(out)}
	if err != nil {
		return res, fmt.Errorf("buildctl build: %w\n%s", err, out)
	}
	return res, nil
}
