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

func TestMain(m *testing.M) {
	code := m.Run()
	summary(os.Stdout)
	os.Exit(code)
}

// summary prints Stevedore next to its floor, benchmark by benchmark.
func summary(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	get := func(name, metric string) (float64, bool) {
		m, ok := results[name]
		if !ok {
			return 0, false
		}
		v, ok := m[metric]
		return v, ok
	}
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
