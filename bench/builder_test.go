package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/services/snapshotter/buildertest"
)

// Targets of issue 11: BuildKit on Stevedore's snapshots next to BuildKit
// on its own overlayfs, for a cold build (nothing on the node) and a warm
// one (the snapshot already on the node, a fresh buildkitd root).
const (
	builderColdTarget = 0.7
	builderWarmTarget = 0.2
)

// BenchmarkBuilder is issue 11's builder benchmark: for each of the pull
// benchmark's images (a), (b), (c), buildkitd builds `FROM image` + `COPY`
// (no output) three ways, in $BENCH_BUILDER_RUNS rounds (default 1), the
// order alternating between rounds (base first, then Stevedore first):
//
//   - base: buildkitd with its own overlayfs snapshotter, fresh root;
//   - cold: buildkitd on Stevedore's snapshots socket, both fresh (a new
//     `stevedore up` with a new data dir, a new buildkitd root);
//   - warm: a new buildkitd root on the same Stevedore after the cold
//     build, so the snapshot is already on the node.
//
// It prints each build's wall time (buildctl's; the medians of the
// rounds), the ratios to base with the targets (cold ≤ 0.7×, warm ≤ 0.2×),
// the CPU each build took (buildkitd's with its children, such as unpigz,
// and Stevedore's meanwhile) and the registry's layer blob GETs, and fails
// when a target is missed. With $BENCH_BUILDER_LOGS naming a directory,
// the daemons' logs and buildctl's output are kept there. It needs root, bin/buildkitd
// and bin/buildctl (make builders), runc, and a stevedore with
// `up --snapshots-socket`; it fails, never skips, without them.
func BenchmarkBuilder(b *testing.B) {
	env := setupBuilder(b)
	for _, spec := range pullImages() {
		b.Run(spec.name, func(b *testing.B) { env.measure(b, spec) })
	}
	if len(env.rows) > 0 {
		env.printTable(os.Stdout)
	}
	for _, r := range env.rows {
		if r.cold/r.base > builderColdTarget {
			b.Errorf("(%s) cold build on Stevedore took %.2f× BuildKit's own (%.2fs vs %.2fs): target ≤ %.1f×", r.image, r.cold/r.base, r.cold, r.base, builderColdTarget)
		}
		if r.warm/r.base > builderWarmTarget {
			b.Errorf("(%s) warm build on Stevedore took %.2f× BuildKit's own cold build (%.2fs vs %.2fs): target ≤ %.1f×", r.image, r.warm/r.base, r.warm, r.base, builderWarmTarget)
		}
	}
}

// builderEnv is what every builder measurement shares.
type builderEnv struct {
	reg       *registrytest.Registry
	stevedore string
	rows      []builderRow
	done      map[string]bool
}

// builderRow is one image's measurements: wall seconds and layer blob
// GETs (by anyone) of each build.
type builderRow struct {
	image                        string
	layers                       int
	base, cold, warm             float64
	baseGets, coldGets, warmGets int
	// CPU seconds the build took: buildkitd's, and Stevedore's during it.
	baseCPU, coldCPU, warmCPU float64
}

func setupBuilder(b *testing.B) *builderEnv {
	b.Helper()
	if os.Getenv("CI") == "" {
		// The harness skips without its tools unless CI is set; a
		// benchmark must fail instead.
		b.Setenv("CI", "1")
	}
	if os.Geteuid() != 0 {
		b.Fatal("the builder benchmark needs root: it runs buildkitd's OCI worker and Stevedore's overlayfs snapshotter")
	}
	for _, dir := range []string{os.TempDir(), imageCacheDir()} {
		if err := requireTmpfs(dir); err != nil {
			b.Fatal(err)
		}
	}
	for _, tool := range []string{"buildkitd", "buildctl", "runc"} {
		buildertest.Tool(b, tool)
	}
	bin := buildertest.BuildStevedore(b)
	buildertest.RequireSnapshotsSocket(b, bin)
	return &builderEnv{reg: registrytest.New(b), stevedore: bin, done: map[string]bool{}}
}

// measure builds one image's Dockerfile base, cold and warm.
func (e *builderEnv) measure(b *testing.B, spec imageSpec) {
	b.ReportMetric(0, "ns/op")
	if e.done[b.Name()] {
		return
	}
	e.done[b.Name()] = true
	gen, err := generate(imageCacheDir(), spec)
	if err != nil {
		b.Fatal(err)
	}
	img := push(b, e.reg, gen)
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+img.ref+"\nCOPY hello.txt /hello.txt\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	// $BENCH_BUILDER_RUNS rounds (default 1), taking turns: even rounds
	// build base first, odd rounds Stevedore cold and warm first; the
	// medians are reported.
	var runs []builderRow
	for round := range builderRuns(b) {
		r := builderRow{}
		tag := fmt.Sprintf("%s-%d", spec.name, round)
		base := func() { r.base, r.baseGets, r.baseCPU = e.build(b, img, dir, nil, tag+"-base") }
		if round%2 == 0 {
			base()
		}
		st := buildertest.StartStevedore(b, e.stevedore)
		r.cold, r.coldGets, r.coldCPU = e.build(b, img, dir, st, tag+"-cold")
		r.warm, r.warmGets, r.warmCPU = e.build(b, img, dir, st, tag+"-warm")
		st.Process.Stop()
		keepLog(b, st.Process.Log, tag+"-stevedore.log")
		if round%2 == 1 {
			base()
		}
		b.Logf("(%s) round %d: base %.2fs  cold %.2fs = %.2f×  warm %.2fs = %.2f×", spec.name, round, r.base, r.cold, r.cold/r.base, r.warm, r.warm/r.base)
		runs = append(runs, r)
	}
	last := runs[len(runs)-1]
	row := builderRow{image: spec.name, layers: len(gen.Layers),
		base: median(runs, func(r builderRow) float64 { return r.base }),
		cold: median(runs, func(r builderRow) float64 { return r.cold }),
		warm: median(runs, func(r builderRow) float64 { return r.warm }),
		// GETs: the last round's (every round starts empty).
		baseGets: last.baseGets, coldGets: last.coldGets, warmGets: last.warmGets,
		baseCPU: median(runs, func(r builderRow) float64 { return r.baseCPU }),
		coldCPU: median(runs, func(r builderRow) float64 { return r.coldCPU }),
		warmCPU: median(runs, func(r builderRow) float64 { return r.warmCPU }),
	}

	b.Logf("(%s) base %.2fs (%d layer GETs, %.2fs CPU)  cold %.2fs = %.2f× (%d, %.2fs CPU)  warm %.2fs = %.2f× (%d, %.2fs CPU)",
		spec.name, row.base, row.baseGets, row.baseCPU, row.cold, row.cold/row.base, row.coldGets, row.coldCPU,
		row.warm, row.warm/row.base, row.warmGets, row.warmCPU)
	b.ReportMetric(row.base, "base-s")
	b.ReportMetric(row.cold, "cold-s")
	b.ReportMetric(row.warm, "warm-s")
	b.ReportMetric(row.cold/row.base, "cold-x")
	b.ReportMetric(row.warm/row.base, "warm-x")
	e.rows = append(e.rows, row)
}

// build runs the Dockerfile in dir once on a fresh buildkitd (on st's
// snapshots socket, or on its own overlayfs when st is nil), stops it, and
// returns buildctl's wall seconds, the layer blob GETs the registry served
// meanwhile, and the CPU seconds buildkitd used and st used meanwhile.
func (e *builderEnv) build(b *testing.B, img *pushedImage, dir string, st *buildertest.Stevedore, name string) (float64, int, float64) {
	b.Helper()
	opts := []buildertest.BuildkitdOption{buildertest.WithPlainHTTPRegistry(e.reg.Host())}
	if st != nil {
		opts = append(opts, buildertest.WithProxySnapshotter(st.Socket))
	}
	bk := buildertest.StartBuildkitd(b, opts...)
	defer bk.Process.Stop()
	cpu := func(p *buildertest.Process) time.Duration {
		c, err := procTreeCPU(p.Pid())
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	var used time.Duration
	if st != nil {
		used -= cpu(st.Process)
	}
	bkBefore := cpu(bk.Process) // its start
	e.reg.Reset()
	ctx, cancel := context.WithTimeoutCause(b.Context(), 20*time.Minute, fmt.Errorf("the build of %s took over 20 minutes", img.ref))
	defer cancel()
	res, err := bk.Build(ctx, buildertest.Build{Context: dir})
	if err != nil {
		b.Fatal(err)
	}
	used += cpu(bk.Process) - bkBefore
	if st != nil {
		used += cpu(st.Process)
	}
	bk.Process.Stop()
	keepLog(b, bk.Process.Log, name+"-buildkitd.log")
	if dir := os.Getenv("BENCH_BUILDER_LOGS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name+"-buildctl.log"), []byte(res.Log), 0o600); err != nil {
			b.Error(err)
		}
	}
	layers := map[string]bool{}
	for _, l := range img.Layers {
		layers[l.Digest.String()] = true
	}
	gets := 0
	for _, r := range e.reg.Requests() {
		if r.Kind == registrytest.KindBlob && r.Method == "GET" && layers[r.Ref] {
			gets++
		}
	}
	return res.Duration.Seconds(), gets, used.Seconds()
}

// builderRunsOr1 is $BENCH_BUILDER_RUNS when it is a count, else 1.
func builderRunsOr1() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_BUILDER_RUNS")); err == nil && n > 0 {
		return n
	}
	return 1
}

// builderRuns is $BENCH_BUILDER_RUNS, the rounds of each image's builds
// (default 1).
func builderRuns(b *testing.B) int {
	v := os.Getenv("BENCH_BUILDER_RUNS")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("BENCH_BUILDER_RUNS=%q: want a positive count", v)
	}
	return n
}

// procTreeCPU returns the user and system CPU time process pid and its
// waited-for children (buildkitd's and Stevedore's unpigz) have used.
func procTreeCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// After the command name (which may hold spaces): fields 14 to 17 are
	// utime, stime, cutime and cstime.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var total time.Duration
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += time.Duration(n) * clockTick
	}
	return total, nil
}

// keepLog copies a daemon's log into the directory BENCH_BUILDER_LOGS
// names, if any, as name: the timelines behind the figures.
func keepLog(b *testing.B, log, name string) {
	b.Helper()
	dir := os.Getenv("BENCH_BUILDER_LOGS")
	if dir == "" {
		return
	}
	data, err := os.ReadFile(log)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), data, 0o600)
	}
	if err != nil {
		b.Error(err)
	}
}

func (e *builderEnv) printTable(w *os.File) {
	fmt.Fprintf(w, "\nBuilder: buildkitd builds FROM image + COPY (no output); medians of %d round(s), the order alternating.\n", builderRunsOr1())
	fmt.Fprintln(w, "base = BuildKit's own overlayfs, fresh root; cold = on Stevedore's snapshots socket, Stevedore and buildkitd fresh;")
	fmt.Fprintln(w, "warm = a fresh buildkitd root on the same Stevedore after the cold build. GETs = the registry's layer blob GETs.")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "image\tlayers\tbase s\tGETs\tcold s\tGETs\tcold/base\ttarget\twarm s\tGETs\twarm/base\ttarget\t")
	for _, r := range e.rows {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%d\t%.2f\t%d\t%.2f×\t%s\t%.2f\t%d\t%.2f×\t%s\t\n",
			r.image, r.layers, r.base, r.baseGets, r.cold, r.coldGets, r.cold/r.base, builderVerdict(r.cold/r.base, builderColdTarget),
			r.warm, r.warmGets, r.warm/r.base, builderVerdict(r.warm/r.base, builderWarmTarget))
	}
	_ = tw.Flush()
}

// builderVerdict says whether ratio meets target.
func builderVerdict(ratio, target float64) string {
	if ratio <= target {
		return fmt.Sprintf("≤ %.1f× ok", target)
	}
	return strings.ToUpper(fmt.Sprintf("> %.1f× missed", target))
}
