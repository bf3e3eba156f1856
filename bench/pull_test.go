package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

// BenchmarkPull is the cold pull of issue 3: for each generated image (see
// images_test.go), Stevedore's pull (`stevedore pull` to snapshot.ready
// against the whole fleet as one `stevedore up` process), containerd's own
// (ctr images pull against a containerd daemon started here) and the floor
// (curl | tar -x of each layer), every one into fresh stores on tmpfs from
// the same in-process registry. Each tool pulls each image once to warm up
// and then $BENCH_PULL_RUNS times (default 3), the tools taking turns, and
// the medians are reported; the summary prints their ratios, and a target
// of issue 3 missed fails the run (TestMain). It needs root, containerd
// and ctr, curl, GNU tar and bash, and fails (never skips) without them,
// or when $TMPDIR (the stores) or $BENCH_IMAGE_CACHE (the generated
// layers) is not on a tmpfs.
//
// Every measurement pulls into a fresh directory: Stevedore gets a new NATS
// server and snapshotter data dir, containerd a new daemon with a new root,
// the floor a new directory; the registry's request log proves each one
// fetched every layer.
func BenchmarkPull(b *testing.B) {
	env := setupPull(b)
	for _, spec := range pullImages() {
		b.Run(spec.name, func(b *testing.B) { env.measure(b, spec) })
	}
}

// sample is one pull by one tool.
type sample struct {
	// wall is the pull's duration.
	wall time.Duration
	// cpu is the user and system CPU time the tool's processes used for
	// it (which ones, each tool says); sys is the system part of it.
	cpu, sys time.Duration
	// rss is the peak resident set of the tool's daemon process, bytes; 0
	// when it has none.
	rss int64
}

// A tool pulls an image cold into dir (empty, on tmpfs, removed after).
type tool interface {
	name() string
	pull(ctx context.Context, img *pushedImage, dir string) (sample, error)
}

// pullEnv is what every pull shares.
type pullEnv struct {
	reg   *registrytest.Registry
	work  string // on tmpfs; each pull has its own directory in it
	tools []tool
	pulls int
}

// measured keeps each sub-benchmark's metrics: a benchmark function can be
// called again with a larger b.N (-benchtime Nx), and a pull benchmark
// measures once.
var measured = map[string]map[string]float64{}

// Tool names, as metrics and the summary use them.
const (
	toolStevedore  = "stevedore"
	toolContainerd = "containerd"
	toolFloor      = "floor"
	// toolNatsOutput is `stevedore pull --nats --output DIR` against the
	// fleet process: the snapshot, then its root filesystem streamed from
	// the snapshotter into DIR.
	toolNatsOutput = "stv-nats-output"
	// toolEmbeddedOutput is `stevedore pull --output DIR` with no fleet:
	// the embedded stack in the command's own process, start-up included.
	toolEmbeddedOutput = "stv-output"
	// toolFloorUnpigz is the floor with tar -I unpigz.
	toolFloorUnpigz = "floor-unpigz"
)

// setupPull checks the machine, builds stevedore (the fleet's `up` and
// the client's `pull`) and starts the registry.
func setupPull(b *testing.B) *pullEnv {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Fatal("the pull benchmark needs root: it runs a containerd daemon and overlayfs snapshotters")
	}
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Fatalf("%s is not installed: the pull benchmark compares with containerd's own pull (on Debian: apt-get install -y containerd)", bin)
		}
	}
	for _, bin := range []string{"curl", "tar", "gzip", "unpigz", "bash", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Fatalf("%s is not installed: the pull benchmark needs it", bin)
		}
	}
	out, err := exec.CommandContext(b.Context(), "containerd", "--version").Output()
	if err != nil {
		b.Fatalf("containerd --version: %v", err)
	}
	containerdVersion = strings.TrimSpace(string(out))

	work := b.TempDir()
	for _, dir := range []string{work, imageCacheDir()} {
		if err := requireTmpfs(dir); err != nil {
			b.Fatal(err)
		}
	}

	bin := filepath.Join(work, "stevedore")
	build := exec.CommandContext(b.Context(), "go", "build", "-trimpath", "-o", bin, "./cmd/stevedore")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build stevedore: %v\n%s", err, out)
	}

	reg := registrytest.New(b)
	env := &pullEnv{reg: reg, work: work, tools: []tool{
		&stevedorePuller{bin: bin},
		&stevedorePuller{bin: bin, output: true},
		&embeddedPuller{bin: bin},
		&containerdPuller{},
		&floorPuller{base: reg.URL()},
		&floorPuller{base: reg.URL(), unpigz: true},
	}}
	// BENCH_PULL_TOOLS (comma-separated names) keeps some tools only, for
	// a profile or a look at one of them; the summary then lacks the others.
	if only := os.Getenv("BENCH_PULL_TOOLS"); only != "" {
		keep := strings.Split(only, ",")
		env.tools = slices.DeleteFunc(env.tools, func(t tool) bool { return !slices.Contains(keep, t.name()) })
		if len(env.tools) == 0 {
			b.Fatalf("BENCH_PULL_TOOLS=%q names no tool", only)
		}
	}
	return env
}

// requireTmpfs fails unless dir (or the nearest existing parent) is on a
// tmpfs: on a disk, file creation costs swamp what is measured.
func requireTmpfs(dir string) error {
	const tmpfsMagic = 0x01021994
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Statfs_t
		err := syscall.Statfs(d, &st)
		if errors.Is(err, syscall.ENOENT) && d != filepath.Dir(d) {
			continue
		}
		if err != nil {
			return fmt.Errorf("statfs %s: %w", d, err)
		}
		if st.Type != tmpfsMagic {
			return fmt.Errorf("%s is not on a tmpfs: the pull and export benchmarks keep every store and their image cache on one (set TMPDIR, or BENCH_TMPDIR for make, and BENCH_IMAGE_CACHE)", dir)
		}
		return nil
	}
}

// pullRuns is how many times each tool pulls each image.
func pullRuns(b *testing.B) int {
	v := os.Getenv("BENCH_PULL_RUNS")
	if v == "" {
		return 3
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("BENCH_PULL_RUNS=%q: want a positive count", v)
	}
	return n
}

// measure pulls one image with every tool, pullRuns times, and reports
// the medians.
func (e *pullEnv) measure(b *testing.B, spec imageSpec) {
	if m, ok := measured[b.Name()]; ok {
		report(b, m)
		b.ReportMetric(0, "ns/op")
		return
	}
	gen, err := generate(imageCacheDir(), spec)
	if err != nil {
		b.Fatal(err)
	}
	img := push(b, e.reg, gen)
	runs := pullRuns(b)
	samples := map[string][]sample{}
	// Round 0 is a warm-up and is not counted: the first pulls after a
	// push pay first-touch costs no later pull does (on a VM, the guest's
	// first use of memory pages: it doubled one pull's system time here).
	var steal func() float64
	for i := range runs + 1 {
		if i == 1 {
			steal = startSteal()
		}
		// Rotate who goes first, so that no tool always follows another.
		for k := range e.tools {
			t := e.tools[(i+k)%len(e.tools)]
			s := e.pullOnce(b, t, img)
			round := "warm-up"
			if i > 0 {
				round = fmt.Sprintf("run %d/%d", i, runs)
				samples[t.name()] = append(samples[t.name()], s)
			}
			b.Logf("(%s) %-7s %-10s %6.2fs  cpu %6.2fs (sys %5.2fs)  peak %4.0f MiB", spec.name, round, t.name(), s.wall.Seconds(), s.cpu.Seconds(), s.sys.Seconds(), float64(s.rss)/(1<<20))
		}
	}
	uncompressed, compressed, entries := gen.size()
	m := map[string]float64{
		"steal-%": steal(),
		"layers":  float64(len(gen.Layers)),
		"entries": float64(entries),
		"MB":      float64(uncompressed) / mb,
		"MB-gz":   float64(compressed) / mb,
		"runs":    float64(runs),
	}
	for name, ss := range samples {
		m[name+"-s"] = median(ss, func(s sample) float64 { return s.wall.Seconds() })
		m[name+"-cpu-s"] = median(ss, func(s sample) float64 { return s.cpu.Seconds() })
		m[name+"-sys-s"] = median(ss, func(s sample) float64 { return s.sys.Seconds() })
		if peak := slices.Max(mapped(ss, func(s sample) float64 { return float64(s.rss) / (1 << 20) })); peak > 0 {
			m[name+"-peak-MiB"] = peak
		}
	}
	measured[b.Name()] = m
	report(b, m)
	b.ReportMetric(0, "ns/op")
}

// pullOnce runs one cold pull in a fresh directory and checks, from the
// registry's log, that it fetched every layer.
func (e *pullEnv) pullOnce(b *testing.B, t tool, img *pushedImage) sample {
	b.Helper()
	// Not b.TempDir: the stores go as soon as they are measured, since
	// tmpfs is memory.
	e.pulls++
	dir := filepath.Join(e.work, fmt.Sprintf("%s-%d", t.name(), e.pulls))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx, cancel := context.WithTimeoutCause(b.Context(), 10*time.Minute, fmt.Errorf("%s pull of %s took over 10 minutes", t.name(), img.ref))
	defer cancel()
	e.reg.Reset()
	s, err := t.pull(ctx, img, dir)
	if err != nil {
		b.Fatalf("%s pull of %s: %v", t.name(), img.ref, err)
	}
	got := map[string]bool{}
	for _, r := range e.reg.Requests() {
		if r.Kind == registrytest.KindBlob && r.Method == "GET" && (r.Status == 200 || r.Status == 206) {
			got[r.Ref] = true
		}
	}
	for _, l := range img.Layers {
		if !got[l.Digest.String()] {
			b.Fatalf("%s pull of %s did not fetch layer %s: not a cold pull", t.name(), img.ref, l.Digest)
		}
	}
	return s
}

func mapped[S any](ss []S, f func(S) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func median[S any](ss []S, f func(S) float64) float64 {
	v := mapped(ss, f)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// cpuTime is CPU time used, user and system.
type cpuTime struct{ user, sys time.Duration }

// since is the sample's cpu and sys for the time used between c0 and c.
func (c cpuTime) since(c0 cpuTime) sample {
	return sample{cpu: c.user - c0.user + c.sys - c0.sys, sys: c.sys - c0.sys}
}

// procCPU returns the CPU time process pid has used, with that of the
// children it has waited for (the fleet's unpigz processes), as the
// rusage of a command that exited counts them.
func procCPU(pid int) (cpuTime, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTime{}, err
	}
	// The command name (field 2) may hold spaces; fields 14 to 17 are
	// utime, stime, cutime and cstime.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 15 {
		return cpuTime{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var ticks [4]int64
	var errs []error
	for j := range ticks {
		var err error
		ticks[j], err = strconv.ParseInt(f[11+j], 10, 64)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return cpuTime{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return cpuTime{user: time.Duration(ticks[0]+ticks[2]) * clockTick, sys: time.Duration(ticks[1]+ticks[3]) * clockTick}, nil
}

// procPeakRSS returns process pid's peak resident set (VmHWM), in bytes.
func procPeakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// profileEnv is the environment that has a stevedore process write its
// CPU profile (STEVEDORE_CPUPROFILE) when BENCH_CPUPROFILE_DIR names a
// directory: one file a tool and image, <tool>-<image>.pprof, the last
// pull's. Unset, it is nil and nothing is profiled.
func profileEnv(tool, image string) []string {
	d := os.Getenv("BENCH_CPUPROFILE_DIR")
	if d == "" {
		return nil
	}
	return []string{"STEVEDORE_CPUPROFILE=" + filepath.Join(d, tool+"-"+image+".pprof")}
}

// process is a daemon the benchmark started, with env added to the
// benchmark's environment: stop ends it with SIGTERM (SIGKILL 10s later)
// and waits for it.
type process struct {
	cmd    *exec.Cmd
	log    string
	done   chan struct{}
	err    error
	cancel context.CancelCauseFunc
}

func startProcess(ctx context.Context, logFile string, env []string, name string, args ...string) (*process, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	ctx, cancel := context.WithCancelCause(ctx)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel(err)
		return nil, err
	}
	p := &process{cmd: cmd, log: logFile, done: make(chan struct{}), cancel: cancel}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited returns a channel closed when the process has exited.
func (p *process) exited() <-chan struct{} { return p.done }

func (p *process) stop() {
	p.cancel(errors.New("pull measured"))
	<-p.done
}

// failure describes the process's exit and the end of its log.
func (p *process) failure() error {
	data, _ := os.ReadFile(p.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	select {
	case <-p.done:
		err := p.err
		if err == nil {
			err = errors.New("exit status 0")
		}
		return fmt.Errorf("%s exited: %w; its log ends:\n%s", filepath.Base(p.cmd.Path), err, data)
	default:
		return fmt.Errorf("%s's log ends:\n%s", filepath.Base(p.cmd.Path), data)
	}
}

// cpuOf is the CPU time an exited command and the children it waited for
// used.
func cpuOf(cmd *exec.Cmd) cpuTime {
	if cmd.ProcessState == nil {
		return cpuTime{}
	}
	return cpuTime{user: cmd.ProcessState.UserTime(), sys: cmd.ProcessState.SystemTime()}
}
