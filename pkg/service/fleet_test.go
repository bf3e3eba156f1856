package service_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/service"
)

// fake is a member that records its life in log.
type fake struct {
	name string
	log  *journal
	fail error // Run returns it at once
}

type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, s)
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

func (f *fake) Run(ctx context.Context) error {
	if f.fail != nil {
		return f.fail
	}
	<-ctx.Done()
	f.log.add("stopped " + f.name)
	return nil
}

func (f *fake) Close() error {
	f.log.add("closed " + f.name)
	return nil
}

func member(name string, log *journal, startErr, runErr error) service.Member {
	return service.Member{Name: name, Start: func(context.Context, jetstream.JetStream, service.Settings) (service.Runner, error) {
		if startErr != nil {
			return nil, startErr
		}
		log.add("started " + name)
		return &fake{name: name, log: log, fail: runErr}, nil
	}}
}

// dialer connects to env, recording each connection by name.
func dialer(t *testing.T, env *bustest.Env) (service.Dial, func() map[string]*nats.Conn) {
	var mu sync.Mutex
	conns := map[string]*nats.Conn{}
	return func(name string) (*nats.Conn, jetstream.JetStream, error) {
			nc, js := env.Connect(t, name)
			mu.Lock()
			defer mu.Unlock()
			conns[name] = nc
			return nc, js, nil
		}, func() map[string]*nats.Conn {
			mu.Lock()
			defer mu.Unlock()
			return conns
		}
}

func TestFleetStartsRunsAndCloses(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dial, conns := dialer(t, env)
	var log journal
	f, err := service.StartFleet(t.Context(), service.Settings{Dial: dial}, member("a", &log, nil, nil), member("b", &log, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := f.Runner("b").(*fake); !ok || r.name != "b" {
		t.Errorf("Runner(b) = %v", f.Runner("b"))
	}
	if f.Runner("c") != nil {
		t.Error("Runner(c) is not nil")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got := log.get()
	// Both stop (in either order) before the last started is closed first.
	if len(got) != 6 || !slices.Equal(got[:2], []string{"started a", "started b"}) ||
		!slices.Equal(got[4:], []string{"closed b", "closed a"}) {
		t.Errorf("life = %q", got)
	}
	for name, nc := range conns() {
		if !nc.IsClosed() {
			t.Errorf("connection %s is open after Close", name)
		}
	}
	if len(conns()) != 2 {
		t.Errorf("connections %v, want a and b", conns())
	}
}

func TestFleetStartFailureClosesWhatStarted(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dial, conns := dialer(t, env)
	var log journal
	boom := errors.New("boom")
	_, err := service.StartFleet(t.Context(), service.Settings{Dial: dial}, member("a", &log, nil, nil), member("b", &log, boom, nil), member("c", &log, nil, nil))
	if !errors.Is(err, boom) {
		t.Fatalf("StartFleet = %v, want boom", err)
	}
	if got := log.get(); !slices.Equal(got, []string{"started a", "closed a"}) {
		t.Errorf("life = %q, want a started and closed, c never started", got)
	}
	for name, nc := range conns() {
		if !nc.IsClosed() {
			t.Errorf("connection %s is open after a failed start", name)
		}
	}
}

func TestFleetWaitReturnsAMembersError(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	dial, _ := dialer(t, env)
	var log journal
	boom := errors.New("boom")
	f, err := service.StartFleet(t.Context(), service.Settings{Dial: dial}, member("a", &log, nil, nil), member("b", &log, nil, boom))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(t.Context()); !errors.Is(err, boom) {
		t.Errorf("Wait = %v, want boom", err)
	}
	if err := f.Close(); !errors.Is(err, boom) {
		t.Errorf("Close = %v, want boom", err)
	}
	if got := log.get(); !slices.Contains(got, "stopped a") {
		t.Errorf("life = %q: a did not stop when b failed", got)
	}
}
