package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

// stevedorePuller is Stevedore's cold pull: a fresh embedded NATS server
// (its store in dir), the resolver and the puller in this process, the
// snapshotter binary as its own process with a fresh data dir in dir and
// the overlayfs snapshotter. It measures client.Pull, from the request to
// snapshot.ready; cpu and rss are the snapshotter process's (the registry,
// NATS, the resolver and the puller share this process with the registry
// every tool uses).
type stevedorePuller struct {
	bin string
}

func (*stevedorePuller) name() string { return toolStevedore }

func (p *stevedorePuller) pull(ctx context.Context, img *pushedImage, dir string) (sample, error) {
	srv, err := broker.Start(broker.Config{DataDir: filepath.Join(dir, "nats"), Port: broker.RandomPort})
	if err != nil {
		return sample{}, err
	}
	defer srv.Shutdown()
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (jetstream.JetStream, error) {
		nc, err := srv.Connect(name)
		if err != nil {
			return nil, err
		}
		conns = append(conns, nc)
		return jetstream.New(nc)
	}
	js, err := connect("bench-client")
	if err != nil {
		return sample{}, err
	}
	if err := bus.Provision(ctx, js, bus.Topology{}); err != nil {
		return sample{}, err
	}

	platform := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	docker := filepath.Join(dir, "docker") // no credentials
	svcCtx, stopServices := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	var svcErrs []error
	var mu sync.Mutex
	defer func() { stopServices(errors.New("pull measured")); wg.Wait() }()
	run := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(svcCtx); err != nil && context.Cause(svcCtx) == nil {
				mu.Lock()
				svcErrs = append(svcErrs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
			}
		})
	}
	rjs, err := connect("resolver")
	if err != nil {
		return sample{}, err
	}
	r, err := resolver.New(rjs, resolver.Config{Instance: "bench", Platform: platform, Logger: quiet})
	if err != nil {
		return sample{}, err
	}
	run("resolver", r.Run)
	pjs, err := connect("puller")
	if err != nil {
		return sample{}, err
	}
	pl, err := puller.New(pjs, puller.Config{Instance: "bench", Platform: platform, Registry: registry.Config{DockerConfigDir: docker}, Logger: quiet})
	if err != nil {
		return sample{}, err
	}
	run("puller", pl.Run)

	sn, err := startProcess(ctx, filepath.Join(dir, "snapshotter.log"), p.bin,
		"-nats", srv.ClientURL(), "-data-dir", filepath.Join(dir, "data"), "-node", "bench",
		"-snapshotter", "overlayfs", "-provision=false", "-http=", "-docker-config", docker)
	if err != nil {
		return sample{}, err
	}
	defer sn.stop()
	if err := waitWorkers(ctx, js, sn); err != nil {
		return sample{}, err
	}

	cpu0, err := procCPU(sn.pid())
	if err != nil {
		return sample{}, err
	}
	op := events.SourceOp{Identifier: "docker-image://" + img.ref, Platform: &platform}
	start := time.Now()
	out, err := client.Pull(ctx, js, client.NewBuildID(), op, nil)
	wall := time.Since(start)
	if err == nil && out.Snapshot == nil {
		err = errors.New("the build ended without snapshot.ready")
	}
	if err != nil {
		mu.Lock()
		defer mu.Unlock()
		return sample{}, errors.Join(append([]error{err, sn.failure()}, svcErrs...)...)
	}
	if out.Snapshot.Fetched != len(img.Layers) {
		return sample{}, fmt.Errorf("snapshot.ready says %d layers fetched, want %d", out.Snapshot.Fetched, len(img.Layers))
	}
	cpu1, err1 := procCPU(sn.pid())
	rss, err2 := procPeakRSS(sn.pid())
	if err := errors.Join(err1, err2); err != nil {
		return sample{}, err
	}
	s := cpu1.since(cpu0)
	s.wall, s.rss = wall, rss
	return s, nil
}

// waitWorkers waits until the resolver, the puller and the snapshotter
// each wait on their consumer, so that the pull measures work, not
// start-up.
func waitWorkers(ctx context.Context, js jetstream.JetStream, sn *process) error {
	return waitConsumers(ctx, js, sn, events.ConsumerResolver, events.ConsumerPuller, events.ConsumerSnapshotter)
}

// waitConsumers waits until each of the named consumers has a worker
// waiting on it; p is the service process among them, whose exit ends the
// wait.
func waitConsumers(ctx context.Context, js jetstream.JetStream, p *process, names ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for {
			c, err := js.Consumer(ctx, events.StreamEvents, name)
			if err != nil {
				return err
			}
			info, err := c.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumWaiting > 0 {
				break
			}
			if time.Now().After(deadline) {
				return errors.Join(fmt.Errorf("consumer %s: no worker after 30s", name), p.failure())
			}
			select {
			case <-p.exited():
				return p.failure()
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// containerdVersion is `containerd --version`, for the summary.
var containerdVersion string

// containerdPuller is containerd's own pull and unpack: a containerd
// daemon with its root, state and socket in dir (CRI disabled, the default
// overlayfs snapshotter), and `ctr images pull --plain-http --snapshotter
// overlayfs`, which fetches every blob into the daemon's content store and
// then unpacks the layers. It measures the ctr command; cpu is ctr's plus
// the daemon's during it, rss is the daemon's.
type containerdPuller struct{}

func (*containerdPuller) name() string { return toolContainerd }

// containerdConfig is the daemon's config.toml; %[1]s is its directory.
const containerdConfig = `version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "%[1]s/containerd.sock"

[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"
`

func (*containerdPuller) pull(ctx context.Context, img *pushedImage, dir string) (sample, error) {
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, containerdConfig, dir), 0o600); err != nil {
		return sample{}, err
	}
	d, err := startProcess(ctx, filepath.Join(dir, "containerd.log"), "containerd", "--config", cfg)
	if err != nil {
		return sample{}, err
	}
	defer d.stop()
	ctr := func(args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "ctr", append([]string{"--address", filepath.Join(dir, "containerd.sock"), "--namespace", "bench"}, args...)...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for ctr("version").Run() != nil {
		if time.Now().After(deadline) {
			return sample{}, errors.Join(errors.New("containerd: not serving after 30s"), d.failure())
		}
		select {
		case <-d.exited():
			return sample{}, d.failure()
		case <-ctx.Done():
			return sample{}, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}

	cpu0, err := procCPU(d.pid())
	if err != nil {
		return sample{}, err
	}
	cmd := ctr("images", "pull", "--plain-http", "--snapshotter", "overlayfs", img.ref)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return sample{}, errors.Join(fmt.Errorf("ctr images pull: %w\n%s", err, out), d.failure())
	}
	cpu1, err1 := procCPU(d.pid())
	rss, err2 := procPeakRSS(d.pid())
	if err := errors.Join(err1, err2); err != nil {
		return sample{}, err
	}
	// Every layer is a committed snapshot: the pull unpacked.
	ls, err := ctr("snapshots", "--snapshotter", "overlayfs", "ls").Output()
	if err != nil {
		return sample{}, fmt.Errorf("ctr snapshots ls: %w", err)
	}
	if n := strings.Count(string(ls), "Committed"); n != len(img.Layers) {
		return sample{}, fmt.Errorf("containerd has %d committed snapshots after the pull, want %d:\n%s", n, len(img.Layers), ls)
	}
	c := cpuOf(cmd)
	s := cpuTime{user: cpu1.user + c.user, sys: cpu1.sys + c.sys}.since(cpu0)
	s.wall, s.rss = wall, rss
	return s, nil
}

// floorPuller is the floor: for each layer in order, `curl blob | tar -xzf
// -` into one directory (bash rather than sh, for pipefail). cpu is bash's
// and everything it waited for: curl, tar and the gzip tar runs.
type floorPuller struct {
	// base is the registry's URL.
	base string
}

func (*floorPuller) name() string { return toolFloor }

func (p *floorPuller) pull(ctx context.Context, img *pushedImage, dir string) (sample, error) {
	root := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return sample{}, err
	}
	var script strings.Builder
	script.WriteString("set -eo pipefail\n")
	for _, l := range img.Layers {
		fmt.Fprintf(&script, "curl -fsS '%s/v2/%s/blobs/%s' | tar -xzf - -C '%s'\n", p.base, img.repo, l.Digest, root)
	}
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("curl | tar: %w\n%s", err, out)
	}
	s := cpuOf(cmd).since(cpuTime{})
	s.wall = wall
	return s, nil
}
