//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// The image sets, each pushed once and pulled by one phase, so that every
// phase's registry GETs are its own.
var (
	// waveShape is the images of the 50-pull waves: three per wave.
	waveShape = shape{Layers: 3, FilesPerLayer: 4, FileSize: 4 << 20}
	// chaosShape is large enough that a snapshot takes seconds, so a
	// replica can be killed in the middle of one.
	chaosShape = shape{Layers: 4, FilesPerLayer: 4, FileSize: 16 << 20}
	// restartShape is the images pulled across a NATS restart.
	restartShape = shape{Layers: 3, FilesPerLayer: 4, FileSize: 8 << 20}
)

// wavePulls is the size of a pull wave.
const wavePulls = 50

// suite is one run: the stack, its images, and the figures for the
// summary.
type suite struct {
	t     *testing.T
	s     *stack
	imgs  map[string][]*genImage // by set: wave3, wave1, chaos, restart
	tmp   string
	sum   *summary
	start time.Time
}

// TestStack runs the whole suite on one compose project.
func TestStack(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the e2e suite needs the docker CLI and a running engine (make e2e checks docker info first)")
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), 17*time.Minute, errors.New("the e2e suite ran over 17 minutes"))
	defer cancel()
	su := &suite{t: t, sum: &summary{}, imgs: map[string][]*genImage{}, tmp: t.TempDir(), start: time.Now()}
	t.Cleanup(func() { su.sum.log(t, time.Since(su.start)) })
	su.s = newStack(t)
	t.Cleanup(func() {
		if t.Failed() {
			su.dumpLogs()
		}
		start := time.Now()
		err := su.s.down()
		su.sum.teardown = fmt.Sprintf("%s down -v --remove-orphans in %s", su.s.project, time.Since(start).Round(100*time.Millisecond))
		if err != nil {
			su.sum.teardown += ": " + err.Error()
			t.Errorf("teardown: %v", err)
		} else {
			su.sum.teardown += ", no container, network or volume left"
		}
	})

	// Generate the images while the stack starts.
	genDone := make(chan error, 1)
	go func() { genDone <- su.generate() }()
	start := time.Now()
	if err := su.s.up(ctx, map[string]int{"puller": 3, "snapshotter": 3}); err != nil {
		t.Fatalf("compose up: %v", err)
	}
	su.sum.startup = time.Since(start)
	if err := <-genDone; err != nil {
		t.Fatalf("generate images: %v", err)
	}
	su.push(ctx)

	// Each phase has a deadline of its own, so a build that never ends
	// fails its phase instead of the whole run.
	phase := func(name string, limit time.Duration, run func(context.Context, *testing.T)) {
		t.Run(name, func(t *testing.T) {
			pctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("%s ran over %s", name, limit))
			defer cancel()
			run(pctx, t)
		})
	}
	phase("wave-3-replicas", 3*time.Minute, func(ctx context.Context, t *testing.T) { su.sum.wave3 = su.wave(ctx, t, "wave3") })
	phase("wave-1-replica", 4*time.Minute, su.waveOneReplica)
	phase("kill-mid-pull", 5*time.Minute, su.chaos)
	phase("nats-restart", 5*time.Minute, su.natsRestart)
	phase("poison", 2*time.Minute, su.poison)
	phase("watcher", 2*time.Minute, su.watcher)
	phase("cli", 2*time.Minute, su.cli)
	phase("cache-export-import", 2*time.Minute, su.cacheExport)
	phase("no-secrets-in-logs-or-events", 2*time.Minute, su.secrets)
	phase("nats-permissions", time.Minute, su.permissions)
}

// generate writes every image set.
func (su *suite) generate() error {
	sets := []struct {
		name  string
		n     int
		shape shape
	}{{"wave3", 3, waveShape}, {"wave1", 3, waveShape}, {"chaos", 2, chaosShape}, {"restart", 2, restartShape}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, 0)
	sem := make(chan struct{}, 2)
	for seed, set := range sets {
		for i := range set.n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				name := fmt.Sprintf("e2e/%s-%c", set.name, 'a'+i)
				img, err := generate(su.tmp, name, uint64(seed*10+i), set.shape)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				su.imgs[set.name] = append(su.imgs[set.name], img)
			}()
		}
	}
	wg.Wait()
	for _, set := range sets {
		slices.SortFunc(su.imgs[set.name], func(a, b *genImage) int { return strings.Compare(a.Name, b.Name) })
	}
	return errors.Join(errs...)
}

// push pushes every image to the stack's registry.
func (su *suite) push(ctx context.Context) {
	t := su.t
	start := time.Now()
	p := &pusher{base: su.s.registryURL(), user: registryUser, password: su.s.registryPassword, client: &http.Client{Timeout: 5 * time.Minute}}
	var n int64
	for _, set := range []string{"wave3", "wave1", "chaos", "restart"} {
		for _, img := range su.imgs[set] {
			if err := p.push(ctx, img); err != nil {
				t.Fatalf("push %s: %v", img.Ref(), err)
			}
			n += img.Size()
		}
	}
	su.sum.pushed = fmt.Sprintf("%d images, %s, in %s", len(su.imgs["wave3"])+len(su.imgs["wave1"])+len(su.imgs["chaos"])+len(su.imgs["restart"]),
		mib(n), time.Since(start).Round(100*time.Millisecond))
}

// connect opens a reconnecting connection as user.
func (su *suite) connect(t *testing.T, user, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := bus.Connect(su.s.natsURL(user), name)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// pullResult is one pull's end.
type pullResult struct {
	Ref     string
	BuildID string
	Out     client.Outcome
	Err     error
	Took    time.Duration
}

// OK reports a pull that ended with its content: a snapshot, or a hit.
func (r pullResult) OK() bool {
	return r.Err == nil && r.Out.Err() == nil && (r.Out.Snapshot != nil || r.Out.Hit != nil)
}

func (r pullResult) String() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("%s %s: %v", r.BuildID, r.Ref, r.Err)
	case r.Out.Err() != nil:
		return fmt.Sprintf("%s %s: failed: %v", r.BuildID, r.Ref, r.Out.Err())
	}
	return fmt.Sprintf("%s %s: ok", r.BuildID, r.Ref)
}

// pull starts a pull of ref on build buildID and follows it to its end. A
// watch that breaks (NATS restarting) starts again from the build's first
// event, and a submit that fails is sent again with the same event id, which
// the stream deduplicates; each may therefore see an event more than once.
func pull(ctx context.Context, js jetstream.JetStream, ref, buildID string, each func(events.Event)) pullResult {
	start := time.Now()
	res := pullResult{Ref: ref, BuildID: buildID}
	req := events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://" + ref}, Snapshot: true}
	for {
		_, err := client.Submit(ctx, js, buildID, req)
		if err == nil {
			break
		}
		if cause := context.Cause(ctx); cause != nil {
			res.Err = fmt.Errorf("submit: %w (last error: %w)", cause, err)
			return res
		}
		time.Sleep(500 * time.Millisecond)
	}
	res.Out, res.Err = follow(ctx, js, buildID, each)
	res.Took = time.Since(start)
	return res
}

// follow folds a build's events until it is done, watching again from the
// first event when a watch breaks.
func follow(ctx context.Context, js jetstream.JetStream, buildID string, each func(events.Event)) (client.Outcome, error) {
	for {
		var out client.Outcome
		err := client.Follow(ctx, js, buildID, true, func(e events.Event) bool {
			out.Add(e)
			if each != nil {
				each(e)
			}
			return true
		})
		if err == nil && out.Done() {
			return out, nil
		}
		if cause := context.Cause(ctx); cause != nil {
			return out, cause
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// pullAll runs one pull per ref concurrently, each on a connection of its
// own (as many clients would), all started at once; it returns the results
// and the time from the first start to the last end.
func (su *suite) pullAll(ctx context.Context, t *testing.T, prefix string, refs []string, each func(events.Event)) ([]pullResult, time.Duration) {
	t.Helper()
	conns := make([]jetstream.JetStream, len(refs))
	for i := range refs {
		_, conns[i] = su.connect(t, "client", fmt.Sprintf("e2e-%s-%d", prefix, i))
	}
	results := make([]pullResult, len(refs))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			results[i] = pull(ctx, conns[i], ref, fmt.Sprintf("%s-%s-%02d", prefix, randomHex(3), i), each)
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	return results, time.Since(start)
}

// waveFigures are one wave's numbers.
type waveFigures struct {
	Replicas            int
	Requested, Complete int
	Took                time.Duration
	Objects             int
	GetsMin, GetsMax    int
	Heads, Challenges   int
	// Made counts the pulls whose snapshotter fetched and unpacked,
	// Followed those that waited for another request's snapshot, Reused
	// those that found it made already, Hit the cache hits.
	Made, Followed, Reused, Hit int
	Failures                    []string
}

// refsFor spreads n pulls over imgs.
func refsFor(imgs []*genImage, n int) []string {
	refs := make([]string, n)
	for i := range refs {
		refs[i] = imgs[i%len(imgs)].Ref()
	}
	return refs
}

// registryLog returns the registry's access log so far.
func (su *suite) registryLog(ctx context.Context, t *testing.T) []accessLine {
	t.Helper()
	l, err := su.s.serviceLogs(ctx, "registry")
	if err != nil {
		t.Fatalf("registry logs: %v", err)
	}
	return parseAccessLog(l)
}

// wave runs wavePulls concurrent pulls of the set's three images and checks
// that every pull completes and that the registry served each manifest and
// blob exactly once.
func (su *suite) wave(ctx context.Context, t *testing.T, set string) waveFigures {
	imgs := su.imgs[set]
	pullers, _ := su.s.containers(ctx, "puller")
	before := len(su.registryLog(ctx, t))
	results, took := su.pullAll(ctx, t, set, refsFor(imgs, wavePulls), nil)
	// The access log line of a request is written when it ends; the pulls
	// ended after their last blob did.
	lines := su.registryLog(ctx, t)[before:]
	f := waveFigures{Requested: len(results), Took: took}
	for _, c := range pullers {
		if c.Running {
			f.Replicas++
		}
	}
	for _, r := range results {
		if !r.OK() {
			f.Failures = append(f.Failures, r.String())
			continue
		}
		f.Complete++
		switch {
		case r.Out.Hit != nil:
			f.Hit++
		case r.Out.Snapshot.Followed:
			f.Followed++
		case r.Out.Snapshot.Fetched > 0:
			f.Made++
		default:
			f.Reused++
		}
	}
	objs := objects(imgs)
	st := countGets(lines, objs)
	f.Objects, f.Heads, f.Challenges = len(objs), st.Heads, st.Challenged
	f.GetsMin = -1
	for _, o := range objs {
		n := st.Served[o.Path]
		if f.GetsMin < 0 || n < f.GetsMin {
			f.GetsMin = n
		}
		f.GetsMax = max(f.GetsMax, n)
		if n != 1 {
			t.Errorf("%s %s %s: %d GETs served, want exactly 1", o.Image.Name, o.Kind, o.Path, n)
		}
	}
	for _, p := range st.Other {
		t.Errorf("unexpected GET %s", p)
	}
	if f.Complete != f.Requested {
		t.Errorf("%d of %d pulls completed; failures: %s", f.Complete, f.Requested, strings.Join(f.Failures, "; "))
	}
	return f
}

// waveOneReplica stops all pullers and snapshotters but one of each, runs
// the wave on fresh images, and starts them again.
func (su *suite) waveOneReplica(ctx context.Context, t *testing.T) {
	var stopped []string
	for _, svc := range []string{"puller", "snapshotter"} {
		ids, err := su.s.containerIDs(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		stopped = append(stopped, ids[1:]...)
	}
	if _, err := docker(ctx, append([]string{"stop", "-t", "10"}, stopped...)...); err != nil {
		t.Fatal(err)
	}
	f := su.wave(ctx, t, "wave1")
	su.sum.wave1 = f
	if _, err := docker(ctx, append([]string{"start"}, stopped...)...); err != nil {
		t.Fatal(err)
	}
	if err := su.s.waitRunningHealthy(ctx, stopped, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// dumpLogs writes every container's log tail to the test log.
func (su *suite) dumpLogs() {
	ctx, cancel := context.WithTimeoutCause(context.Background(), time.Minute, errors.New("dumping logs took over a minute"))
	defer cancel()
	cs, err := su.s.containers(ctx, "")
	if err != nil {
		su.t.Logf("containers: %v", err)
		return
	}
	dir := os.Getenv("STEVEDORE_E2E_LOGS")
	for _, c := range cs {
		l, _ := su.s.logs(ctx, c.ID)
		if dir != "" {
			_ = os.WriteFile(filepath.Join(dir, c.Name+".log"), []byte(l), 0o644)
		}
		lines := strings.Split(strings.TrimSpace(l), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		su.t.Logf("--- %s (%s, running=%t health=%s), last %d lines:\n%s", c.Name, c.Short(), c.Running, c.Health, len(lines), strings.Join(lines, "\n"))
	}
}

// once runs a function the first time it is called.
type once struct {
	done atomic.Bool
}

func (o *once) do(f func()) {
	if o.done.CompareAndSwap(false, true) {
		f()
	}
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
