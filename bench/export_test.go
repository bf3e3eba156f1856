package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

// BenchmarkExport is the remote cache export next to skopeo copy, on image
// (a) of the pull benchmark (images_test.go) in the in-process registry.
//
// Stevedore's export is client.ExportCache of the image's two keys to
// type=local,dest=DIR, timed from the request to cache.exported. NATS (its
// store on tmpfs), the resolver and the puller run in this process, the
// exporter (built from services/exporter/cmd/exporter) as its own process,
// so its CPU time is the exporter's alone. The record it exports is the
// one the snapshotter writes after a pull of the image, put into the cache
// index before the runs from what client.Resolve reports. skopeo's is
// `skopeo copy docker://… oci:DIR:latest`. Both fetch every layer blob from
// the registry once (the registry's log proves it) and write it into a
// fresh OCI layout on tmpfs; neither decompresses. After one untimed
// warm-up round each tool exports $BENCH_EXPORT_RUNS times (default 5), the
// tools taking turns, and the medians are reported.
//
// Then the same records are exported twice to another repository of the
// same registry (type=registry): the first export should mount the layers
// from the image's repository rather than upload them, and the second must
// upload nothing, or the benchmark fails.
//
// It needs skopeo and fails (never skips) without it, or when $TMPDIR (the
// layouts and NATS) or $BENCH_IMAGE_CACHE (the generated layers) is not on
// a tmpfs.
func BenchmarkExport(b *testing.B) {
	env := setupExport(b)
	for _, spec := range exportImages() {
		b.Run(spec.name, func(b *testing.B) { env.measure(b, spec) })
	}
}

// exportImages are the images the export benchmark exports: (a).
func exportImages() []imageSpec {
	var out []imageSpec
	for _, spec := range pullImages() {
		if spec.name == "a" {
			out = append(out, spec)
		}
	}
	return out
}

// Exporter names, as metrics and the summary use them.
const (
	exportStevedore = "stevedore"
	exportSkopeo    = "skopeo"
)

// skopeoVersion is `skopeo --version`, for the summary.
var skopeoVersion string

// exportSample is one export by one tool.
type exportSample struct {
	// wall is the export's duration.
	wall time.Duration
	// cpu is the CPU time (user and system) of the tool's process during
	// it, sys the system part: the exporter process, or skopeo.
	cpu, sys time.Duration
	// self is this process's CPU time during it: the registry serving the
	// blobs, and for Stevedore also NATS, the resolver, the puller (idle)
	// and the client.
	self time.Duration
	// requests counts the registry requests it made, layerGets the
	// successful GETs of layer blobs among them.
	requests, layerGets int
}

// An exportTool writes the layers of img into a new OCI layout at dest (on
// tmpfs, not there yet), tagged latest.
type exportTool interface {
	name() string
	export(ctx context.Context, img *pushedImage, dest string) (exportSample, error)
}

// exportEnv is what every export shares.
type exportEnv struct {
	reg *registrytest.Registry
	// work is on tmpfs; each export has its own directory in it.
	work string
	// bin is the exporter binary.
	bin string
	// policy is skopeo's signature policy file: accept anything.
	policy  string
	exports int
}

// setupExport checks the machine, builds the exporter and starts the
// registry.
func setupExport(b *testing.B) *exportEnv {
	b.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		b.Fatal("skopeo is not installed: the export benchmark compares with `skopeo copy` (make bench-deps installs it as root on Debian; or apt-get install -y skopeo)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		b.Fatal("go is not installed: the export benchmark builds the exporter")
	}
	out, err := exec.CommandContext(b.Context(), "skopeo", "--version").Output()
	if err != nil {
		b.Fatalf("skopeo --version: %v", err)
	}
	skopeoVersion = strings.TrimSpace(string(out))

	work := b.TempDir()
	for _, dir := range []string{work, imageCacheDir()} {
		if err := requireTmpfs(dir); err != nil {
			b.Fatal(err)
		}
	}
	bin := filepath.Join(work, "stevedore-exporter")
	build := exec.CommandContext(b.Context(), "go", "build", "-trimpath", "-o", bin, "./services/exporter/cmd/exporter")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the exporter: %v\n%s", err, out)
	}
	// The policy Debian installs, written here so that the machine's own
	// cannot change what skopeo does.
	policy := filepath.Join(work, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		b.Fatal(err)
	}
	return &exportEnv{reg: registrytest.New(b), work: work, bin: bin, policy: policy}
}

// exportRuns is how many times each tool exports.
func exportRuns(b *testing.B) int {
	v := os.Getenv("BENCH_EXPORT_RUNS")
	if v == "" {
		return 5
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("BENCH_EXPORT_RUNS=%q: want a positive count", v)
	}
	return n
}

// measure exports one image with every tool, exportRuns times, reports the
// medians, then exports it to the registry twice.
func (e *exportEnv) measure(b *testing.B, spec imageSpec) {
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
	fleetDir := filepath.Join(e.work, "fleet")
	if err := os.Mkdir(fleetDir, 0o755); err != nil {
		b.Fatal(err)
	}
	f := startExportFleet(b, e.bin, fleetDir)
	keys := f.putRecord(b, img)
	sk, where, err := newSkopeoCopier(b.Context(), e.work, e.policy)
	if err != nil {
		b.Fatal(err)
	}
	skopeoCache = where
	b.Logf("skopeo's blob info cache: %s", where)
	tools := []exportTool{&stevedoreExporter{fleet: f, keys: keys}, sk}

	runs := exportRuns(b)
	samples := map[string][]exportSample{}
	var steal func() float64
	for i := range runs + 1 {
		if i == 1 {
			steal = startSteal()
		}
		for k := range tools {
			t := tools[(i+k)%len(tools)]
			s := e.exportOnce(b, t, img)
			round := "warm-up"
			if i > 0 {
				round = fmt.Sprintf("run %d/%d", i, runs)
				samples[t.name()] = append(samples[t.name()], s)
			}
			b.Logf("(%s) %-7s %-9s %6.3fs  cpu %6.3fs (sys %5.3fs)  this process %6.3fs  requests %d, layer GETs %d",
				spec.name, round, t.name(), s.wall.Seconds(), s.cpu.Seconds(), s.sys.Seconds(), s.self.Seconds(), s.requests, s.layerGets)
		}
	}
	_, compressed, _ := gen.size()
	m := map[string]float64{
		"steal-%": steal(),
		"layers":  float64(len(gen.Layers)),
		"MB-gz":   float64(compressed) / mb,
		"runs":    float64(runs),
	}
	for name, ss := range samples {
		m[name+"-s"] = median(ss, func(s exportSample) float64 { return s.wall.Seconds() })
		m[name+"-cpu-s"] = median(ss, func(s exportSample) float64 { return s.cpu.Seconds() })
		m[name+"-sys-s"] = median(ss, func(s exportSample) float64 { return s.sys.Seconds() })
		m[name+"-self-s"] = median(ss, func(s exportSample) float64 { return s.self.Seconds() })
		m[name+"-requests"] = median(ss, func(s exportSample) float64 { return float64(s.requests) })
		m[name+"-layer-gets"] = median(ss, func(s exportSample) float64 { return float64(s.layerGets) })
	}

	// The registry target: the same records into cache/bench of the same
	// registry, twice.
	target := "type=registry,ref=" + e.reg.Host() + "/cache/bench:1"
	for i, label := range []string{"reg1", "reg2"} {
		r := e.registryExport(b, f, keys, img, target)
		b.Logf("(%s) registry export %d: %6.3fs  written %d, mounted %d, existed %d; upload requests %d (blobs uploaded %d), mounts %d of %d requests, layer GETs %d",
			spec.name, i+1, r.wall.Seconds(), r.out.Written, r.out.Mounted, r.out.Existed, r.uploads, r.uploaded, r.mounted, r.mountRequests, r.layerGets)
		m[label+"-s"] = r.wall.Seconds()
		m[label+"-written"] = float64(r.out.Written)
		m[label+"-mounted"] = float64(r.out.Mounted)
		m[label+"-existed"] = float64(r.out.Existed)
		m[label+"-uploads"] = float64(r.uploads)
		m[label+"-uploaded"] = float64(r.uploaded)
		m[label+"-mounts"] = float64(r.mounted)
		m[label+"-mount-requests"] = float64(r.mountRequests)
		m[label+"-layer-gets"] = float64(r.layerGets)
	}
	measured[b.Name()] = m
	report(b, m)
	b.ReportMetric(0, "ns/op")
	if n := m["reg2-uploads"]; n > 0 {
		b.Fatalf("the second export to %s sent blob content in %.0f requests: it should have found every blob in the repository", target, n)
	}
}

// exportOnce runs one export into a fresh layout, checks the layout, and
// checks from the registry's log that it fetched every layer once.
func (e *exportEnv) exportOnce(b *testing.B, t exportTool, img *pushedImage) exportSample {
	b.Helper()
	e.exports++
	dir := filepath.Join(e.work, fmt.Sprintf("%s-%d", t.name(), e.exports))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	dest := filepath.Join(dir, "layout")
	ctx, cancel := context.WithTimeoutCause(b.Context(), 10*time.Minute, fmt.Errorf("%s export of %s took over 10 minutes", t.name(), img.ref))
	defer cancel()
	e.reg.Reset()
	self0 := selfCPU()
	s, err := t.export(ctx, img, dest)
	s.self = selfCPU() - self0
	if err != nil {
		b.Fatalf("%s export of %s: %v", t.name(), img.ref, err)
	}
	if err := checkLayout(dest, img); err != nil {
		b.Fatalf("%s export of %s: %v", t.name(), img.ref, err)
	}
	reqs := e.reg.Requests()
	gets := layerGets(reqs, img)
	for _, l := range img.Layers {
		if gets[l.Digest] == 0 {
			b.Fatalf("%s export of %s did not fetch layer %s (requests: %v)", t.name(), img.ref, l.Digest, e.reg.Counts())
		}
		s.layerGets += gets[l.Digest]
	}
	if s.layerGets != len(img.Layers) {
		b.Fatalf("%s export of %s made %d layer blob GETs for %d layers: %v", t.name(), img.ref, s.layerGets, len(img.Layers), gets)
	}
	s.requests = len(reqs)
	return s
}

// layerGets counts the successful GETs of each of img's layer blobs.
func layerGets(reqs []registrytest.Request, img *pushedImage) map[digest.Digest]int {
	layers := map[digest.Digest]bool{}
	for _, l := range img.Layers {
		layers[l.Digest] = true
	}
	out := map[digest.Digest]int{}
	for _, r := range reqs {
		d := digest.Digest(r.Ref)
		if r.Kind == registrytest.KindBlob && r.Method == http.MethodGet && (r.Status == http.StatusOK || r.Status == http.StatusPartialContent) && layers[d] {
			out[d]++
		}
	}
	return out
}

// checkLayout checks that the OCI layout at dir tags a manifest "latest"
// in its index.json, that the manifest lists every layer of img, and that
// the layout holds each layer's blob, of its size and digest.
func checkLayout(dir string, img *pushedImage) error {
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return fmt.Errorf("the layout has no index.json: %w", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	i := slices.IndexFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.Annotations[ocispec.AnnotationRefName] == "latest" })
	if i < 0 {
		return fmt.Errorf("index.json tags no manifest latest:\n%s", data)
	}
	if err := checkBlob(dir, idx.Manifests[i]); err != nil {
		return err
	}
	data, err = os.ReadFile(blobFile(dir, idx.Manifests[i].Digest))
	if err != nil {
		return err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", idx.Manifests[i].Digest, err)
	}
	for _, l := range img.Layers {
		if !slices.ContainsFunc(m.Layers, func(d ocispec.Descriptor) bool { return d.Digest == l.Digest }) {
			return fmt.Errorf("manifest %s does not list layer %s", idx.Manifests[i].Digest, l.Digest)
		}
		if err := checkBlob(dir, ocispec.Descriptor{Digest: l.Digest, Size: l.Size}); err != nil {
			return err
		}
	}
	return nil
}

func blobFile(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// checkBlob checks that the layout at dir holds desc's blob, whole.
func checkBlob(dir string, desc ocispec.Descriptor) error {
	f, err := os.Open(blobFile(dir, desc.Digest))
	if err != nil {
		return fmt.Errorf("the layout lacks blob %s: %w", desc.Digest, err)
	}
	defer func() { _ = f.Close() }()
	v := desc.Digest.Verifier()
	n, err := io.Copy(v, f)
	if err != nil {
		return err
	}
	if n != desc.Size || !v.Verified() {
		return fmt.Errorf("blob %s in the layout is %d bytes that do not match it (want %d)", desc.Digest, n, desc.Size)
	}
	return nil
}

// selfCPU is the CPU time (user and system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// exportFleet is the Stevedore the exports run on: an embedded NATS server
// (its store on tmpfs) with the topology provisioned, the resolver and the
// puller in this process, and the exporter binary as its own process.
type exportFleet struct {
	js  jetstream.JetStream
	exp *process

	mu      sync.Mutex
	svcErrs []error
}

// startExportFleet starts the fleet in dir; it stops when b ends.
func startExportFleet(b *testing.B, bin, dir string) *exportFleet {
	b.Helper()
	srv, err := broker.Start(broker.Config{DataDir: filepath.Join(dir, "nats"), Port: broker.RandomPort})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	connect := func(name string) jetstream.JetStream {
		nc, err := srv.Connect(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		return js
	}
	f := &exportFleet{js: connect("bench-client")}
	if err := bus.Provision(b.Context(), f.js, bus.Topology{}); err != nil {
		b.Fatal(err)
	}
	rjs, pjs := connect("resolver"), connect("puller")

	platform := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	docker := filepath.Join(dir, "docker") // no credentials
	svcCtx, stopServices := context.WithCancelCause(b.Context())
	var wg sync.WaitGroup
	b.Cleanup(func() { stopServices(errors.New("export measured")); wg.Wait() })
	run := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(svcCtx); err != nil && context.Cause(svcCtx) == nil {
				f.mu.Lock()
				f.svcErrs = append(f.svcErrs, fmt.Errorf("%s: %w", name, err))
				f.mu.Unlock()
			}
		})
	}
	r, err := resolver.New(rjs, resolver.Config{Replica: service.Replica{Instance: "bench", Logger: quiet}, Platform: platform})
	if err != nil {
		b.Fatal(err)
	}
	run("resolver", r.Run)
	pl, err := puller.New(pjs, puller.Config{Replica: service.Replica{Instance: "bench", Logger: quiet}, Platform: platform, Registry: registry.Config{DockerConfigDir: docker}})
	if err != nil {
		b.Fatal(err)
	}
	run("puller", pl.Run)

	f.exp, err = startProcess(b.Context(), filepath.Join(dir, "exporter.log"), nil, bin,
		"-nats", srv.ClientURL(), "-instance", "bench", "-provision=false", "-http=", "-docker-config", docker)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.exp.stop)
	if err := waitConsumers(b.Context(), f.js, f.exp, events.ConsumerResolver, events.ConsumerPuller, events.ConsumerExporter); err != nil {
		b.Fatal(err)
	}
	return f
}

// failure joins err with the exporter's log and the services' errors.
func (f *exportFleet) failure(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(append([]error{err, f.exp.failure()}, f.svcErrs...)...)
}

// putRecord resolves img and puts into the cache index the record the
// snapshotter writes after pulling it: under both keys, its layers, their
// location the digest-pinned reference, its chainID the index-1 key. It
// returns the keys' solver digests.
func (f *exportFleet) putRecord(b *testing.B, img *pushedImage) []digest.Digest {
	b.Helper()
	ctx, cancel := context.WithTimeoutCause(b.Context(), 2*time.Minute, fmt.Errorf("resolving %s took over 2 minutes", img.ref))
	defer cancel()
	platform := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	out, err := client.Resolve(ctx, f.js, client.NewBuildID(), events.SourceOp{Identifier: "docker-image://" + img.ref, Platform: &platform}, nil)
	if err != nil {
		b.Fatalf("resolve %s: %v", img.ref, f.failure(err))
	}
	if out.Miss == nil || out.Miss.CacheOpts == nil || len(out.Keys) != 2 {
		b.Fatalf("resolve %s: want a cache.miss with cacheOpts and two keys, got %+v", img.ref, out)
	}
	opts := out.Miss.CacheOpts
	if len(opts.Layers) != len(img.Layers) {
		b.Fatalf("resolve %s: cacheOpts has %d layers, the image %d", img.ref, len(opts.Layers), len(img.Layers))
	}
	for i, l := range opts.Layers {
		if l.Blob.Digest != img.Layers[i].Digest || l.DiffID != img.Layers[i].DiffID {
			b.Fatalf("resolve %s: layer %d is %s (diffID %s), the image's %s (%s)", img.ref, i, l.Blob.Digest, l.DiffID, img.Layers[i].Digest, img.Layers[i].DiffID)
		}
	}
	chainID, err := digest.Parse(out.Keys[1].Key)
	if err != nil {
		b.Fatalf("resolve %s: the index-1 key %q is not a chainID: %v", img.ref, out.Keys[1].Key, err)
	}
	index, err := cacheindex.Open(ctx, f.js)
	if err != nil {
		b.Fatal(err)
	}
	keys := []digest.Digest{out.Keys[0].Digest, out.Keys[1].Digest}
	rec := events.CacheRecord{
		Digests: keys, ChainID: chainID, Layers: opts.Layers, Node: "bench", SnapshotKey: chainID.String(),
		Locations: []events.BlobLocation{{Ref: opts.Ref}}, CreatedAt: time.Now().UTC(),
	}
	if err := index.Put(ctx, rec); err != nil {
		b.Fatal(err)
	}
	return keys
}

// export runs one export of keys to target and returns cache.exported.
func (f *exportFleet) export(ctx context.Context, target string, keys []digest.Digest) (events.CacheExported, error) {
	out, err := client.ExportCache(ctx, f.js, client.NewBuildID(), events.CacheExportRequested{Target: target, Keys: keys}, nil)
	if err != nil {
		return events.CacheExported{}, f.failure(err)
	}
	if out.Exported == nil {
		return events.CacheExported{}, f.failure(errors.New("the export ended without cache.exported"))
	}
	return *out.Exported, nil
}

// stevedoreExporter is Stevedore's export: client.ExportCache of the keys
// to type=local,dest=DIR. cpu is the exporter process's.
type stevedoreExporter struct {
	fleet *exportFleet
	keys  []digest.Digest
}

func (*stevedoreExporter) name() string { return exportStevedore }

func (e *stevedoreExporter) export(ctx context.Context, img *pushedImage, dest string) (exportSample, error) {
	pid := e.fleet.exp.pid()
	cpu0, err := procCPU(pid)
	if err != nil {
		return exportSample{}, err
	}
	start := time.Now()
	out, err := e.fleet.export(ctx, "type=local,dest="+dest, e.keys)
	wall := time.Since(start)
	if err != nil {
		return exportSample{}, err
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		return exportSample{}, err
	}
	if n := len(img.Layers); out.Layers != n || out.Written != n {
		return exportSample{}, fmt.Errorf("cache.exported says %d layers, %d written; want %d of each", out.Layers, out.Written, n)
	}
	s := cpu1.since(cpu0)
	return exportSample{wall: wall, cpu: s.cpu, sys: s.sys}, nil
}

// skopeoCopier is skopeo's copy of the image into an OCI layout. cpu is
// skopeo's (and, as root, that of the sh and mount before it).
type skopeoCopier struct {
	policy string
	// cache is the directory on tmpfs skopeo keeps its blob info cache
	// in; bind is set when, as root, it is bound over skopeoCacheDir.
	cache string
	bind  bool
}

// skopeoCacheDir is where skopeo run as root keeps its blob info cache, a
// BoltDB it syncs some 30 times a copy, whatever its environment says.
const skopeoCacheDir = "/var/lib/containers/cache"

// skopeoCache says where skopeo's blob info cache was, for the summary.
var skopeoCache string

// newSkopeoCopier puts skopeo's blob info cache on tmpfs, in work: on a
// disk its syncs would cost skopeo tens of milliseconds a copy that the
// exporter, whose stores are all on tmpfs, does not pay. A user's skopeo
// finds it through XDG_DATA_HOME; root's is bound over skopeoCacheDir in a
// private mount namespace of each skopeo command, when the machine allows
// it.
func newSkopeoCopier(ctx context.Context, work, policy string) (*skopeoCopier, string, error) {
	c := &skopeoCopier{policy: policy, cache: filepath.Join(work, "skopeo-cache")}
	if err := os.Mkdir(c.cache, 0o700); err != nil {
		return nil, "", err
	}
	if os.Geteuid() != 0 {
		return c, "on tmpfs (XDG_DATA_HOME)", nil
	}
	if err := os.MkdirAll(skopeoCacheDir, 0o700); err != nil {
		return nil, "", err
	}
	c.bind = true
	if out, err := c.command(ctx, "--version").CombinedOutput(); err != nil {
		c.bind = false
		return c, fmt.Sprintf("on disk in %s (a private bind mount failed: %v: %s)", skopeoCacheDir, err, bytes.TrimSpace(out)), nil
	}
	return c, "on tmpfs (bound over " + skopeoCacheDir + " in a private mount namespace)", nil
}

// command is skopeo with args, its blob info cache in c.cache.
func (c *skopeoCopier) command(ctx context.Context, args ...string) *exec.Cmd {
	if !c.bind {
		cmd := exec.CommandContext(ctx, "skopeo", args...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(c.cache, "share"))
		return cmd
	}
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", `mount --bind "$0" ` + skopeoCacheDir + ` && exec skopeo "$@"`, c.cache}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / private in it
	return cmd
}

func (*skopeoCopier) name() string { return exportSkopeo }

func (c *skopeoCopier) export(ctx context.Context, img *pushedImage, dest string) (exportSample, error) {
	cmd := c.command(ctx, "--policy", c.policy, "copy", "--src-tls-verify=false", "docker://"+img.ref, "oci:"+dest+":latest")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return exportSample{}, fmt.Errorf("skopeo copy: %w\n%s", err, out)
	}
	s := cpuOf(cmd).since(cpuTime{})
	return exportSample{wall: wall, cpu: s.cpu, sys: s.sys}, nil
}

// registryResult is one export to the registry and what the registry saw.
type registryResult struct {
	wall time.Duration
	out  events.CacheExported
	// uploads counts the requests that carried blob content
	// (registrytest's Uploads), uploaded the uploads completed (201).
	uploads, uploaded int
	// mountRequests counts the cross-repository mount requests, mounted
	// those that mounted (201).
	mountRequests, mounted int
	// layerGets counts the GETs of layer blobs (a mount needs none).
	layerGets int
}

// registryExport exports keys to target (a repository of e.reg) and checks
// that the repository then has the cache manifest and every layer.
func (e *exportEnv) registryExport(b *testing.B, f *exportFleet, keys []digest.Digest, img *pushedImage, target string) registryResult {
	b.Helper()
	ctx, cancel := context.WithTimeoutCause(b.Context(), 10*time.Minute, fmt.Errorf("export to %s took over 10 minutes", target))
	defer cancel()
	e.reg.Reset()
	start := time.Now()
	out, err := f.export(ctx, target, keys)
	r := registryResult{wall: time.Since(start), out: out}
	if err != nil {
		b.Fatalf("export to %s: %v", target, err)
	}
	for _, u := range e.reg.Uploads() {
		r.uploads++
		if u.Status == http.StatusCreated {
			r.uploaded++
		}
	}
	for _, m := range e.reg.Mounts() {
		r.mountRequests++
		if m.Status == http.StatusCreated {
			r.mounted++
		}
	}
	for _, n := range layerGets(e.reg.Requests(), img) {
		r.layerGets += n
	}
	if out.Layers != len(img.Layers) || out.Manifest.Digest == "" {
		b.Fatalf("export to %s: cache.exported %+v, want %d layers and a manifest", target, out, len(img.Layers))
	}
	if data, _ := e.reg.Manifest(b, "cache/bench", "1"); len(data) == 0 {
		b.Fatalf("export to %s: the repository has no manifest tagged 1", target)
	}
	for _, l := range img.Layers {
		if _, ok := e.reg.Blob("cache/bench", l.Digest); !ok {
			b.Fatalf("export to %s: the repository lacks layer %s", target, l.Digest)
		}
	}
	return r
}
