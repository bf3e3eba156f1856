package bench

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
)

// results keeps the metrics of each benchmark's last run, for the summary
// TestMain prints after all of them.
var (
	resultsMu sync.Mutex
	results   = map[string]map[string]float64{}
)

// report records and reports a benchmark's metrics.
func report(b *testing.B, metrics map[string]float64) {
	resultsMu.Lock()
	results[b.Name()] = metrics
	resultsMu.Unlock()
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
}

// TestMain runs the benchmarks, prints the summary, and fails the run
// (exit status 1) when a target of an issue was missed: `make bench…`
// then fails too.
func TestMain(m *testing.M) {
	code := m.Run()
	summary(os.Stdout)
	if len(missed) > 0 {
		fmt.Printf("\nFAIL: %d target(s) MISSED: %s\n", len(missed), strings.Join(missed, "; "))
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// summary prints Stevedore next to its floor (and, for pulls, next to
// containerd), for the benchmarks that ran.
func summary(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	ran := func(prefix string) bool {
		for name := range results {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		}
		return false
	}
	if ran("BenchmarkWarmPath/") || ran("BenchmarkThroughput/") {
		warmSummary(w)
	}
	if ran("BenchmarkPull/") {
		pullSummary(w)
		outputSummary(w)
	}
	if ran("BenchmarkExport/") {
		exportSummary(w)
	}
}

// get returns a metric of a benchmark's last run.
func get(name, metric string) (float64, bool) {
	m, ok := results[name]
	if !ok {
		return 0, false
	}
	v, ok := m[metric]
	return v, ok
}

func warmSummary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\nWarm path: resolve → index 0 → cache.hit through the bus (digest-pinned ref, manifest known, key in the cache index).")
	fmt.Fprintln(w, "floor = the same three hops with handlers that only emit the next event.")
	fmt.Fprintln(tw, "transport\tfloor p50 µs\tstevedore p50 µs\tratio\tfloor p99 µs\tstevedore p99 µs\tratio\tCPU steal %\t")
	for _, tr := range []transport{inproc, tcp} {
		fl, sv := "BenchmarkWarmPath/"+string(tr)+"/floor/pullers=1", "BenchmarkWarmPath/"+string(tr)+"/stevedore/pullers=1"
		f50, ok1 := get(fl, "p50-µs")
		s50, ok2 := get(sv, "p50-µs")
		if !ok1 || !ok2 {
			continue
		}
		f99, _ := get(fl, "p99-µs")
		s99, _ := get(sv, "p99-µs")
		st1, _ := get(fl, "steal-%")
		st2, _ := get(sv, "steal-%")
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.2f×\t%.0f\t%.0f\t%.2f×\t%.0f / %.0f\t\n", tr, f50, s50, s50/f50, f99, s99, s99/f99, st1, st2)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nThroughput: resolves per second, 64 in flight, services over TCP.")
	fmt.Fprintln(tw, "pullers\tfloor req/s\tstevedore req/s\tratio\tCPU steal %\t")
	for _, n := range []int{1, 2} {
		fv, ok1 := get(fmt.Sprintf("BenchmarkThroughput/floor/pullers=%d", n), "req/s")
		sv, ok2 := get(fmt.Sprintf("BenchmarkThroughput/stevedore/pullers=%d", n), "req/s")
		if !ok1 || !ok2 {
			continue
		}
		st1, _ := get(fmt.Sprintf("BenchmarkThroughput/floor/pullers=%d", n), "steal-%")
		st2, _ := get(fmt.Sprintf("BenchmarkThroughput/stevedore/pullers=%d", n), "steal-%")
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f×\t%.0f / %.0f\t\n", n, fv, sv, sv/fv, st1, st2)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nCPU steal is the share of this VM's CPU time the hypervisor gave to others during the run; tails (p99) follow it.")
}

// The pull targets of issue 3.
const (
	// targetVsContainerd bounds stevedore's time over containerd's on
	// images (a) and (c).
	targetVsContainerd = 0.5
	// targetVsFloor bounds stevedore's time over the floor's on (a) and
	// (c).
	targetVsFloor = 1.5
	// targetPeakMiB bounds the snapshotter's peak RSS on (c). The
	// benchmark measures the fleet process (NATS and every service), an
	// upper bound: under it the target is met; over it the table says so
	// as information, not as a miss.
	targetPeakMiB = 150
)

func pullSummary(w io.Writer) {
	fmt.Fprintln(w, "\nCold pull: each image from the same in-process registry into fresh stores on tmpfs; median of each tool's pulls")
	fmt.Fprintln(w, "after one untimed warm-up round, the tools taking turns.")
	fmt.Fprintln(w, "stevedore = stevedore pull --nats, start to exit, against the whole fleet in one process (stevedore up: NATS, resolver,")
	fmt.Fprintln(w, "puller, snapshotter on overlayfs, exporter);")
	fmt.Fprintf(w, "containerd = ctr images pull --snapshotter overlayfs against a fresh daemon (%s); floor = curl blob | tar -xzf, layer by layer.\n", containerdVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "image\tlayers\tentries\tMB\tMB gz\truns\tstevedore s\tcontainerd s\tfloor s\tstv/ctrd\tstv/floor\tctrd/floor\tfleet peak MiB\tsteal %\t≤0.5× ctrd\t≤1.5× floor\tsnapshotter peak ≤150 MiB\t")
	var notes []string
	for _, spec := range pullImages() {
		name := "BenchmarkPull/" + spec.name
		sv, ok := get(name, toolStevedore+"-s")
		if !ok {
			continue
		}
		m := results[name]
		ct, fl := m[toolContainerd+"-s"], m[toolFloor+"-s"]
		peak := m[toolStevedore+"-peak-MiB"]
		vsC, vsF := sv/ct, sv/fl
		okC, okF, okRSS := "—", "—", "—"
		if spec.name == "a" || spec.name == "c" {
			okC = verdict(fmt.Sprintf("pull (%s) stevedore/containerd %.2f× ≤ %.1f×", spec.name, vsC, targetVsContainerd), vsC <= targetVsContainerd)
			okF = verdict(fmt.Sprintf("pull (%s) stevedore/floor %.2f× ≤ %.1f×", spec.name, vsF, targetVsFloor), vsF <= targetVsFloor)
		}
		if spec.name == "c" {
			// The target is the snapshotter's; the fleet process's peak
			// bounds it from above, so only a fleet under it says met.
			okRSS = "met"
			if peak > targetPeakMiB {
				okRSS = "info: fleet over"
			}
		}
		fmt.Fprintf(tw, "(%s)\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f×\t%.2f×\t%.2f×\t%.0f\t%.1f\t%s\t%s\t%s\t\n",
			spec.name, m["layers"], m["entries"], m["MB"], m["MB-gz"], m["runs"], sv, ct, fl, vsC, vsF, ct/fl, peak, m["steal-%"], okC, okF, okRSS)
		notes = append(notes, fmt.Sprintf("(%s) %s", spec.name, spec.about))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, strings.Join(notes, "; ")+".")
	fmt.Fprintln(w, "\nCPU time (user+sys, of which sys) of each pull, median; CPU/wall near 1 means one core did the work.")
	fmt.Fprintln(w, "stevedore = stevedore pull plus the fleet process (NATS, resolver, puller, snapshotter, exporter); containerd = ctr plus")
	fmt.Fprintln(w, "the daemon; floor = curl, tar and gzip. Peaks: stevedore's is the fleet process's, containerd's the daemon's.")
	fmt.Fprintln(tw, "image\tstevedore CPU s\tsys s\tCPU/wall\tcontainerd CPU s\tsys s\tCPU/wall\tfloor CPU s\tsys s\tCPU/wall\tstevedore peak MiB\tcontainerd peak MiB\t")
	for _, spec := range pullImages() {
		name := "BenchmarkPull/" + spec.name
		if _, ok := get(name, toolStevedore+"-s"); !ok {
			continue
		}
		m := results[name]
		fmt.Fprintf(tw, "(%s)", spec.name)
		for _, t := range []string{toolStevedore, toolContainerd, toolFloor} {
			fmt.Fprintf(tw, "\t%.2f\t%.2f\t%.2f", m[t+"-cpu-s"], m[t+"-sys-s"], m[t+"-cpu-s"]/m[t+"-s"])
		}
		fmt.Fprintf(tw, "\t%.0f\t%.0f\t\n", m[toolStevedore+"-peak-MiB"], m[toolContainerd+"-peak-MiB"])
	}
	_ = tw.Flush()
}

// The targets of issue 13, over the floor with unpigz.
const (
	// targetSnapshotVsFloor bounds the snapshot-only pull on (a), (b), (c).
	targetSnapshotVsFloor = 1.0
	// targetOutputVsFloor bounds pull --output, embedded and --nats.
	targetOutputVsFloor = 1.1
)

// outputSummary is issue 13's table: the snapshot, --output embedded and
// --nats --output next to containerd and both floors, the ratios to the
// unpigz floor, and the fleet's peak RSS on (c).
func outputSummary(w io.Writer) {
	fmt.Fprintln(w, "\nIssue 13: one alternated run per image; floor = curl blob | tar -I unpigz -xf (floor gzip: tar -xzf).")
	fmt.Fprintln(w, "stv snapshot = pull --nats against stevedore up; stv --output = pull --output DIR alone (embedded stack, start-up")
	fmt.Fprintln(w, "included); stv --nats --output = pull --nats --output DIR against stevedore up (the rootfs streamed from the snapshotter).")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "image	stv snapshot s	stv --output s	stv --nats --output s	containerd s	floor s	floor gzip s	snapshot/floor	--output/floor	--nats --output/floor	fleet peak MiB	--output peak MiB	steal %	≤1.0× snapshot	≤1.1× --output	≤1.1× --nats --output	fleet peak ≤150 MiB on (c)	")
	for _, spec := range pullImages() {
		name := "BenchmarkPull/" + spec.name
		m, ok := results[name]
		if !ok {
			continue
		}
		fl := m[toolFloorUnpigz+"-s"]
		sn, eo, no := m[toolStevedore+"-s"], m[toolEmbeddedOutput+"-s"], m[toolNatsOutput+"-s"]
		peak := m[toolStevedore+"-peak-MiB"]
		okPeak := "—"
		if spec.name == "c" {
			okPeak = verdict(fmt.Sprintf("pull (c) fleet peak %.0f MiB ≤ %d MiB", peak, targetPeakMiB), peak <= targetPeakMiB)
		}
		fmt.Fprintf(tw, "(%s)\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f×\t%.2f×\t%.2f×\t%.0f\t%.0f\t%.1f\t%s\t%s\t%s\t%s\t\n",
			spec.name, sn, eo, no, m[toolContainerd+"-s"], fl, m[toolFloor+"-s"], sn/fl, eo/fl, no/fl, peak, m[toolEmbeddedOutput+"-peak-MiB"], m["steal-%"],
			verdict(fmt.Sprintf("pull (%s) snapshot/floor %.2f× ≤ %.1f×", spec.name, sn/fl, targetSnapshotVsFloor), sn/fl <= targetSnapshotVsFloor),
			verdict(fmt.Sprintf("pull (%s) --output/floor %.2f× ≤ %.1f×", spec.name, eo/fl, targetOutputVsFloor), eo/fl <= targetOutputVsFloor),
			verdict(fmt.Sprintf("pull (%s) --nats --output/floor %.2f× ≤ %.1f×", spec.name, no/fl, targetOutputVsFloor), no/fl <= targetOutputVsFloor),
			okPeak)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "CPU s (user+sys) of each, median: stv = the fleet process plus the client; --output = its one process; floor = curl, tar, unpigz.")
	fmt.Fprintln(tw, "image\tstv snapshot\tstv --output\tstv --nats --output\tcontainerd\tfloor\tfloor gzip\t")
	for _, spec := range pullImages() {
		m, ok := results["BenchmarkPull/"+spec.name]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "(%s)", spec.name)
		for _, t := range []string{toolStevedore, toolEmbeddedOutput, toolNatsOutput, toolContainerd, toolFloorUnpigz, toolFloor} {
			fmt.Fprintf(tw, "\t%.2f", m[t+"-cpu-s"])
		}
		fmt.Fprintln(tw, "\t")
	}
	_ = tw.Flush()
}

// targetVsSkopeo bounds stevedore's export time over skopeo copy's.
const targetVsSkopeo = 1.1

func exportSummary(w io.Writer) {
	fmt.Fprintln(w, "\nCache export: each image from the same in-process registry into a fresh OCI layout on tmpfs; median of each tool's")
	fmt.Fprintln(w, "exports after one untimed warm-up round, the tools taking turns. Both fetch every layer blob once and write it; neither decompresses.")
	fmt.Fprintln(w, "stevedore = client.ExportCache type=local,dest=DIR of the image's two keys, request to cache.exported (exporter process; NATS,")
	fmt.Fprintf(w, "resolver and puller in-process); skopeo = skopeo copy --src-tls-verify=false docker://REF oci:DIR:latest (%s),\n", skopeoVersion)
	fmt.Fprintf(w, "its blob info cache %s.\n", skopeoCache)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "image\tlayers\tMB gz\truns\tstevedore s\tskopeo s\tstv/skopeo\tstevedore MB/s\tskopeo MB/s\tlayer GETs stv / skopeo\trequests stv / skopeo\tsteal %\t≤1.1× skopeo\t")
	var names []string
	for _, spec := range exportImages() {
		name := "BenchmarkExport/" + spec.name
		sv, ok := get(name, exportStevedore+"-s")
		if !ok {
			continue
		}
		names = append(names, spec.name)
		m := results[name]
		sk := m[exportSkopeo+"-s"]
		fmt.Fprintf(tw, "(%s)\t%.0f\t%.0f\t%.0f\t%.3f\t%.3f\t%.2f×\t%.0f\t%.0f\t%.0f / %.0f\t%.0f / %.0f\t%.1f\t%s\t\n",
			spec.name, m["layers"], m["MB-gz"], m["runs"], sv, sk, sv/sk, m["MB-gz"]/sv, m["MB-gz"]/sk,
			m[exportStevedore+"-layer-gets"], m[exportSkopeo+"-layer-gets"], m[exportStevedore+"-requests"], m[exportSkopeo+"-requests"],
			m["steal-%"], verdict(fmt.Sprintf("export (%s) stevedore/skopeo %.2f× ≤ %.1f×", spec.name, sv/sk, targetVsSkopeo), sv/sk <= targetVsSkopeo))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nCPU time (user+sys, of which sys) of each export, median. stevedore = the exporter process alone; skopeo = the skopeo process.")
	fmt.Fprintln(w, "this process = the benchmark's own CPU during the export (getrusage RUSAGE_SELF): the registry, and for stevedore NATS and the client too.")
	fmt.Fprintln(tw, "image\tstevedore CPU s\tsys s\tCPU/wall\tskopeo CPU s\tsys s\tCPU/wall\tthis process stv s\tthis process skopeo s\t")
	for _, n := range names {
		m := results["BenchmarkExport/"+n]
		fmt.Fprintf(tw, "(%s)", n)
		for _, t := range []string{exportStevedore, exportSkopeo} {
			fmt.Fprintf(tw, "\t%.3f\t%.3f\t%.2f", m[t+"-cpu-s"], m[t+"-sys-s"], m[t+"-cpu-s"]/m[t+"-s"])
		}
		fmt.Fprintf(tw, "\t%.3f\t%.3f\t\n", m[exportStevedore+"-self-s"], m[exportSkopeo+"-self-s"])
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nRegistry target: the same records exported twice to type=registry,ref=HOST/cache/bench:1 of the same registry, whose")
	fmt.Fprintln(w, "bench/<image> repository holds the layers. Blobs as cache.exported counts them; uploads = requests carrying blob content")
	fmt.Fprintln(w, "(registrytest Uploads; completed ones in brackets), mounts = cross-repository mounts that mounted (of those asked).")
	fmt.Fprintln(tw, "image\texport\ts\twritten\tmounted\texisted\tuploads\tmounts\tlayer GETs\tno upload on 2nd\t")
	for _, n := range names {
		m := results["BenchmarkExport/"+n]
		for i, r := range []string{"reg1", "reg2"} {
			ok := "—"
			if i == 1 {
				ok = verdict(fmt.Sprintf("export (%s) second registry export uploads %.0f, want 0", n, m[r+"-uploads"]), m[r+"-uploads"] == 0)
			}
			fmt.Fprintf(tw, "(%s)\t%d\t%.3f\t%.0f\t%.0f\t%.0f\t%.0f (%.0f)\t%.0f of %.0f\t%.0f\t%s\t\n",
				n, i+1, m[r+"-s"], m[r+"-written"], m[r+"-mounted"], m[r+"-existed"], m[r+"-uploads"], m[r+"-uploaded"],
				m[r+"-mounts"], m[r+"-mount-requests"], m[r+"-layer-gets"], ok)
		}
	}
	_ = tw.Flush()
}

// missed lists the targets the summary found missed; TestMain fails the
// run when there is any.
var missed []string

// verdict says whether the target what was met, and records it as missed
// when it was not.
func verdict(what string, met bool) string {
	if met {
		return "met"
	}
	missed = append(missed, what)
	return "MISSED"
}

// startSteal samples the machine's CPU steal counter; the returned
// function gives the percentage of CPU time stolen since.
func startSteal() func() float64 {
	s0, t0 := readSteal()
	return func() float64 {
		s1, t1 := readSteal()
		if t1 <= t0 {
			return 0
		}
		return 100 * float64(s1-s0) / float64(t1-t0)
	}
}

// readSteal returns the steal and total jiffies of /proc/stat's cpu line;
// zeros where there is no /proc.
func readSteal() (steal, total uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i == 7 {
			steal = v
		}
	}
	return steal, total
}
