package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// stevedorePuller is Stevedore's cold pull as an operator runs it on one
// machine: the whole fleet as one process, `stevedore up` (embedded NATS,
// resolver, puller, snapshotter on overlayfs, exporter) with a fresh data
// dir in dir, and the client as another, `stevedore pull --nats`. It
// measures the client's run, start to exit (its connect included, as
// ctr's is). cpu is the fleet process's CPU during that run plus the
// client's, as containerd's is the daemon's plus ctr's; rss is the fleet
// process's peak, NATS and every service in it, as containerd's is the
// daemon's. The registry stays in the benchmark process, as for every
// tool.
//
// With output set it is `stevedore pull --nats --output DIR`: the same
// pull, then the root filesystem streamed from the snapshotter into DIR.
type stevedorePuller struct {
	bin    string
	output bool
}

func (p *stevedorePuller) name() string {
	if p.output {
		return toolNatsOutput
	}
	return toolStevedore
}

func (p *stevedorePuller) pull(ctx context.Context, img *pushedImage, dir string) (sample, error) {
	port, err := freePort(ctx)
	if err != nil {
		return sample{}, err
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	platform := "linux/" + runtime.GOARCH
	docker := filepath.Join(dir, "docker") // no credentials
	fleet, err := startProcess(ctx, filepath.Join(dir, "fleet.log"), profileEnv(p.name(), img.spec.name), p.bin, "up",
		"--data-dir", filepath.Join(dir, "data"), "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--snapshotter", "overlayfs", "--docker-config", docker, "--platform", platform)
	if err != nil {
		return sample{}, err
	}
	defer fleet.stop()
	nc, err := connectTo(ctx, filepath.Join(dir, "data", "nats-credentials"), fleet)
	if err != nil {
		return sample{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return sample{}, err
	}
	if err := waitWorkers(ctx, js, fleet); err != nil {
		return sample{}, err
	}

	cpu0, err := procCPU(fleet.pid())
	if err != nil {
		return sample{}, err
	}
	var stdout, stderr bytes.Buffer
	args := []string{"pull", "--nats", url, "--json", "--progress", "plain", "--platform", platform, "docker-image://" + img.ref}
	rootfs := filepath.Join(dir, "rootfs")
	if p.output {
		args = append(args, "--output", rootfs)
	}
	cli := exec.CommandContext(ctx, p.bin, args...)
	if env := profileEnv(p.name()+"-client", img.spec.name); env != nil {
		cli.Env = append(os.Environ(), env...)
	}
	cli.Stdout, cli.Stderr = &stdout, &stderr
	start := time.Now()
	err = cli.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, errors.Join(fmt.Errorf("stevedore pull: %w\n%s", err, tail(stderr.Bytes())), fleet.failure())
	}
	// BENCH_PROGRESS_DIR keeps the client's progress (--progress plain:
	// each step's time), one file a tool and image, the last pull's.
	if d := os.Getenv("BENCH_PROGRESS_DIR"); d != "" {
		if err := os.WriteFile(filepath.Join(d, p.name()+"-"+img.spec.name+".progress"), stderr.Bytes(), 0o600); err != nil {
			return sample{}, err
		}
	}
	cpu1, err1 := procCPU(fleet.pid())
	rss, err2 := procPeakRSS(fleet.pid())
	if err := errors.Join(err1, err2); err != nil {
		return sample{}, err
	}
	var out client.Outcome
	if err := json.NewDecoder(&stdout).Decode(&out); err != nil {
		return sample{}, fmt.Errorf("stevedore pull --json: %w", err)
	}
	if out.Snapshot == nil {
		return sample{}, errors.Join(fmt.Errorf("the build ended without snapshot.ready: %+v", out), fleet.failure())
	}
	if out.Snapshot.Fetched != len(img.Layers) {
		return sample{}, fmt.Errorf("snapshot.ready says %d layers fetched, want %d", out.Snapshot.Fetched, len(img.Layers))
	}
	if p.output {
		if err := checkRootfs(rootfs, img); err != nil {
			return sample{}, err
		}
	}
	cliCPU := cpuOf(cli)
	fleetCPU := cpu1.since(cpu0)
	return sample{wall: wall, cpu: fleetCPU.cpu + cliCPU.user + cliCPU.sys, sys: fleetCPU.sys + cliCPU.sys, rss: rss}, nil
}

// freePort returns a TCP port of 127.0.0.1 nobody listens on now.
func freePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// connectTo connects to the NATS server of process p (stevedore up) with
// the URL in its credentials file, trying again until it listens (30s at
// most) or p exits.
func connectTo(ctx context.Context, credentials string, p *process) (*nats.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		// up admits only its own user: the URL with the password it made
		// is in its data dir once it listens.
		url, err := os.ReadFile(credentials)
		var nc *nats.Conn
		if err == nil {
			nc, err = nats.Connect(strings.TrimSpace(string(url)), nats.Name("bench-client"))
		}
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("connect with %s: %w", credentials, err), p.failure())
		}
		select {
		case <-p.exited():
			return nil, p.failure()
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tail is the end of a command's output, for an error.
func tail(out []byte) []byte {
	if len(out) > 4000 {
		return out[len(out)-4000:]
	}
	return out
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
			// The process may not have provisioned the consumer yet.
			var waiting bool
			c, err := js.Consumer(ctx, events.StreamEvents, name)
			if err == nil {
				var info *jetstream.ConsumerInfo
				if info, err = c.Info(ctx); err == nil {
					waiting = info.NumWaiting > 0
				}
			}
			if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return err
			}
			if waiting {
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
	d, err := startProcess(ctx, filepath.Join(dir, "containerd.log"), nil, "containerd", "--config", cfg)
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

// embeddedPuller is `stevedore pull --output DIR` with no fleet: the
// command starts the embedded stack (NATS, every service) in its own
// process with a fresh data dir, pulls, writes DIR from the snapshot and
// exits. It measures the command, start-up included; cpu and rss are its
// process's (the whole fleet and the client in one).
type embeddedPuller struct {
	bin string
}

func (*embeddedPuller) name() string { return toolEmbeddedOutput }

func (p *embeddedPuller) pull(ctx context.Context, img *pushedImage, dir string) (sample, error) {
	rootfs := filepath.Join(dir, "rootfs")
	cli := exec.CommandContext(ctx, p.bin, "pull", "--data-dir", filepath.Join(dir, "data"), "--snapshotter", "overlayfs",
		"--docker-config", filepath.Join(dir, "docker"), "--json", "--progress", "plain",
		"--platform", "linux/"+runtime.GOARCH, "--output", rootfs, "docker-image://"+img.ref)
	if env := profileEnv(p.name(), img.spec.name); env != nil {
		cli.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cli.Stdout, cli.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cli.Start(); err != nil {
		return sample{}, err
	}
	peak := watchPeakRSS(cli.Process.Pid)
	err := cli.Wait()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("stevedore pull --output: %w\n%s", err, tail(stderr.Bytes()))
	}
	if err := checkRootfs(rootfs, img); err != nil {
		return sample{}, err
	}
	s := cpuOf(cli).since(cpuTime{})
	s.wall, s.rss = wall, peak()
	return s, nil
}

// watchPeakRSS polls process pid's peak resident set (VmHWM) every 20ms
// until it is gone; the returned function gives the last value read. (The
// rusage of a child is no use here: a child forked with CLONE_VM starts
// with its parent's peak, and the benchmark's process holds the registry.)
func watchPeakRSS(pid int) func() int64 {
	var mu sync.Mutex
	var last int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rss, err := procPeakRSS(pid)
			if err != nil {
				return
			}
			mu.Lock()
			last = rss
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() int64 {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// checkRootfs checks that an output directory was filled: at least half
// as many entries as the image's largest layer holds (later layers of a
// chain may delete some). The trees' equality with GNU tar's is the
// tests' (pkg/snapshot TestExportMatchesGNUTar), not the benchmark's.
func checkRootfs(dir string, img *pushedImage) error {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, _ fs.DirEntry, err error) error {
		n++
		return err
	})
	if err != nil {
		return fmt.Errorf("output %s: %w", dir, err)
	}
	most := 0
	for _, l := range img.Layers {
		most = max(most, l.Entries)
	}
	if n < most/2 {
		return fmt.Errorf("output %s holds %d entries, want at least %d", dir, n, most/2)
	}
	return nil
}

// floorPuller is the floor: for each layer in order, `curl blob | tar -xzf
// -` into one directory (bash rather than sh, for pipefail); with unpigz
// set, `tar -I unpigz -xf -`. cpu is bash's and everything it waited for:
// curl, tar and gzip (or unpigz).
type floorPuller struct {
	// base is the registry's URL.
	base   string
	unpigz bool
}

func (p *floorPuller) name() string {
	if p.unpigz {
		return toolFloorUnpigz
	}
	return toolFloor
}

func (p *floorPuller) pull(ctx context.Context, img *pushedImage, dir string) (sample, error) {
	root := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return sample{}, err
	}
	var script strings.Builder
	script.WriteString("set -eo pipefail\n")
	for _, l := range img.Layers {
		untar := "tar -xzf -"
		if p.unpigz {
			untar = "tar -I unpigz -xf -"
		}
		fmt.Fprintf(&script, "curl -fsS '%s/v2/%s/blobs/%s' | %s -C '%s'\n", p.base, img.repo, l.Digest, untar, root)
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
