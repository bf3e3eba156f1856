package lease_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lease"
)

func setup(t *testing.T, holder string, env *bustest.Env) (*lease.Manager, *lease.Flight) {
	t.Helper()
	_, js := env.Connect(t, holder)
	m, err := lease.NewManager(t.Context(), js, lease.Config{Bucket: events.BucketLeases, Holder: holder, TTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f, err := lease.NewFlight(t.Context(), js, m, events.BucketManifests)
	if err != nil {
		t.Fatal(err)
	}
	return m, f
}

func TestAcquireIsExclusiveAndOutlivesTTLWhileRenewed(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	a, _ := setup(t, "a", env)
	b, _ := setup(t, "b", env)
	l, err := a.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(t.Context(), "k"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("second Acquire = %v, want ErrHeld", err)
	}
	// Three TTLs later the renewed lease is still held.
	time.Sleep(4500 * time.Millisecond)
	if _, err := b.Acquire(t.Context(), "k"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("Acquire after 3 TTLs = %v, want ErrHeld (renewal failed?)", err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	l2, err := b.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatalf("Acquire after Release = %v", err)
	}
	_ = l2.Release(t.Context())
}

func TestDeadHolderExpires(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	m, _ := setup(t, "a", env)
	// A holder that died right after acquiring: nobody renews its key.
	kv, err := env.JS.KeyValue(t.Context(), events.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(t.Context(), "k", []byte(`{"holder":"dead"}`), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire(t.Context(), "k"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("Acquire = %v, want ErrHeld", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := m.Acquire(t.Context(), "k")
		if err == nil {
			_ = l.Release(t.Context())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead holder's lease never expired: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFlightRunsOnceForConcurrentCallers(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	var runs, calling atomic.Int32
	outcomes := make([]lease.Outcome, 20)
	var wg sync.WaitGroup
	for i := range outcomes {
		_, f := setup(t, fmt.Sprintf("h%d", i%2), env) // two "replicas"
		wg.Add(1)
		go func() {
			defer wg.Done()
			calling.Add(1)
			res, err := f.Do(t.Context(), "work", nil, func(ctx context.Context) ([]byte, error) {
				runs.Add(1)
				// The work lasts until every caller has called Do, and a
				// little longer: they come while it runs, however late
				// the machine schedules them.
				for calling.Load() < int32(len(outcomes)) {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(100 * time.Millisecond)
				return []byte("result"), nil
			})
			if err != nil || string(res.Value) != "result" {
				t.Errorf("Do = %q, %v", res.Value, err)
			}
			outcomes[i] = res.Outcome
		}()
	}
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("work ran %d times, want 1", runs.Load())
	}
	ran := 0
	for _, o := range outcomes {
		if o == lease.Ran {
			ran++
		}
	}
	if ran != 1 {
		t.Errorf("%d callers report Ran, want 1 (%v)", ran, outcomes)
	}
}

func TestFlightTakesOverFromFailedAndDeadHolders(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	_, f := setup(t, "a", env)

	// A holder whose work fails: the waiter runs the work itself.
	started, fail := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = f.Do(t.Context(), "k1", nil, func(ctx context.Context) ([]byte, error) {
			close(started)
			<-fail
			return nil, errors.New("registry down")
		})
	}()
	<-started
	type result struct {
		res lease.Result
		err error
	}
	waiter := make(chan result, 1)
	go func() {
		res, err := f.Do(t.Context(), "k1", nil, func(ctx context.Context) ([]byte, error) { return []byte("second"), nil })
		waiter <- result{res, err}
	}()
	// The premise: the waiter waits for the holder rather than running
	// the work next to it.
	select {
	case r := <-waiter:
		t.Fatalf("Do returned %q %v %v while another holder ran the work", r.res.Value, r.res.Outcome, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(fail)
	r := <-waiter
	res, err := r.res, r.err
	if err != nil || string(res.Value) != "second" || res.Outcome != lease.Ran {
		t.Fatalf("after a failed holder: %q %v %v", res.Value, res.Outcome, err)
	}

	// A holder that died: its lease expires and the waiter takes over.
	kv, _ := env.JS.KeyValue(t.Context(), events.BucketLeases)
	if _, err := kv.Create(t.Context(), "k2", []byte(`{}`), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err = f.Do(t.Context(), "k2", nil, func(ctx context.Context) ([]byte, error) { return []byte("took over"), nil })
	if err != nil || string(res.Value) != "took over" {
		t.Fatalf("after a dead holder: %q %v", res.Value, err)
	}
	if time.Since(start) < 500*time.Millisecond {
		t.Errorf("took over after %s, before the dead lease expired", time.Since(start))
	}
}

func TestFlightAcceptRejectsStaleResults(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	_, f := setup(t, "a", env)
	if _, err := f.Do(t.Context(), "k", nil, func(context.Context) ([]byte, error) { return []byte("old"), nil }); err != nil {
		t.Fatal(err)
	}
	res, err := f.Do(t.Context(), "k", func(v []byte) bool { return string(v) != "old" },
		func(context.Context) ([]byte, error) { return []byte("new"), nil })
	if err != nil || string(res.Value) != "new" || res.Outcome != lease.Ran {
		t.Fatalf("Do = %q %v %v", res.Value, res.Outcome, err)
	}
	res, err = f.Do(t.Context(), "k", nil, func(context.Context) ([]byte, error) { return nil, errors.New("must not run") })
	if err != nil || string(res.Value) != "new" || res.Outcome != lease.Stored {
		t.Fatalf("Do = %q %v %v", res.Value, res.Outcome, err)
	}
}

// TestFlightUpdateMerges: concurrent Updates from two replicas each
// append to the stored value; none is lost, and a change's error stores
// nothing.
func TestFlightUpdateMerges(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	_, a := setup(t, "a", env)
	_, b := setup(t, "b", env)
	var wg sync.WaitGroup
	const each = 20
	var stored sync.Map // "[i.j]" of the updates that returned nil
	for i, f := range []*lease.Flight{a, b} {
		wg.Go(func() {
			for j := range each {
				err := f.Update(t.Context(), "merged", func(old []byte, found bool) ([]byte, error) {
					if found != (old != nil) {
						return nil, fmt.Errorf("found %v with %q", found, old)
					}
					return append(old, fmt.Sprintf("[%d.%d]", i, j)...), nil
				})
				switch {
				case err == nil:
					stored.Store(fmt.Sprintf("[%d.%d]", i, j), true)
				case !errors.Is(err, lease.ErrContended):
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	v, found, err := a.Get(t.Context(), "merged")
	if err != nil || !found {
		t.Fatalf("Get = %v, %v", found, err)
	}
	n := 0
	stored.Range(func(k, _ any) bool {
		n++
		if !bytesContain(v, k.(string)) {
			t.Errorf("update %s is lost from %s", k, v)
		}
		return true
	})
	if n < each {
		t.Errorf("only %d of %d updates were stored", n, 2*each)
	}
	boom := errors.New("boom")
	if err := a.Update(t.Context(), "merged", func([]byte, bool) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("a failing change: %v", err)
	}
	if w, _, _ := a.Get(t.Context(), "merged"); string(w) != string(v) {
		t.Error("a failing change stored something")
	}
}

func bytesContain(b []byte, s string) bool { return strings.Contains(string(b), s) }

func TestFlightRefreshNeverWaitsForAHolder(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	am, af := setup(t, "a", env)
	_, bf := setup(t, "b", env)
	ctx := t.Context()
	// A stored result does not stop a refresh: it runs and replaces it.
	if _, err := af.Do(ctx, "r", nil, func(context.Context) ([]byte, error) { return []byte("old"), nil }); err != nil {
		t.Fatal(err)
	}
	if err := bf.Refresh(ctx, "r", func(context.Context) ([]byte, error) { return []byte("new"), nil }); err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	if v, _, err := af.Get(ctx, "r"); err != nil || string(v) != "new" {
		t.Fatalf("after Refresh Get = %q, %v; want new", v, err)
	}
	// While a holds the lease, b's refresh returns ErrHeld without running.
	l, err := am.Acquire(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Release(ctx) }()
	ran := false
	err = bf.Refresh(ctx, "r", func(context.Context) ([]byte, error) { ran = true; return []byte("x"), nil })
	if !errors.Is(err, lease.ErrHeld) || ran {
		t.Fatalf("Refresh while held = %v (ran %v), want ErrHeld without running", err, ran)
	}
	// A failed refresh keeps the stored result.
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bf.Refresh(ctx, "r", func(context.Context) ([]byte, error) { return nil, errors.New("registry down") }); err == nil {
		t.Fatal("Refresh with failing work = nil")
	}
	if v, _, _ := af.Get(ctx, "r"); string(v) != "new" {
		t.Fatalf("after a failed Refresh Get = %q, want new", v)
	}
}
