package tagwatch_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/tagwatch"
)

func open(t *testing.T, env *bustest.Env, name string) *tagwatch.Store {
	t.Helper()
	_, js := env.Connect(t, name)
	s, err := tagwatch.Open(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Of many replicas claiming the same round at once, exactly one wins;
// an earlier round is never claimed again.
func TestClaimOncePerRound(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	stores := []*tagwatch.Store{open(t, env, "a"), open(t, env, "b"), open(t, env, "c")}
	for round := uint64(10); round < 13; round++ {
		var won atomic.Int32
		var wg sync.WaitGroup
		for _, s := range stores {
			wg.Go(func() {
				err := s.Claim(t.Context(), round)
				switch {
				case err == nil:
					won.Add(1)
				case !errors.Is(err, tagwatch.ErrClaimed):
					t.Errorf("claim %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		if n := won.Load(); n != 1 {
			t.Errorf("round %d claimed %d times, want 1", round, n)
		}
	}
	if err := stores[0].Claim(t.Context(), 11); !errors.Is(err, tagwatch.ErrClaimed) {
		t.Errorf("an earlier round claimed again: %v", err)
	}
}

// The first check records the tag's digest; a move is reported once; a
// registry failure keeps the digest and says why.
func TestCheckReportsMovesOnce(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	s := open(t, env, "a")
	ctx := t.Context()
	for _, bad := range []string{"", "host/repo", "host/repo@" + digest.FromString("x").String(), "host:5000/repo"} {
		if err := s.Add(ctx, tagwatch.Watch{Ref: bad}); !errors.Is(err, tagwatch.ErrInvalid) {
			t.Errorf("Add(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := s.Add(ctx, tagwatch.Watch{Ref: "host:5000/repo:1", Platform: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	current := digest.FromString("a")
	var fail error
	r := tagwatch.ResolverFunc(func(context.Context, string) (digest.Digest, error) { return current, fail })
	check := func() int {
		t.Helper()
		changes, err := s.Check(ctx, r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return len(changes)
	}
	if n := check(); n != 0 {
		t.Errorf("first check: %d moves, want 0 (it only records)", n)
	}
	if n := check(); n != 0 {
		t.Errorf("unchanged: %d moves", n)
	}
	current = digest.FromString("b")
	changes, err := s.Check(ctx, r, time.Now())
	if err != nil || len(changes) != 1 || changes[0].Old != digest.FromString("a").String() || changes[0].New != current.String() || changes[0].Platform != "linux/arm64" {
		t.Fatalf("after the move: %+v, %v", changes, err)
	}
	if n := check(); n != 0 {
		t.Errorf("the move reported again: %d", n)
	}
	fail = errors.New("registry down")
	if n := check(); n != 0 {
		t.Errorf("a failing registry reported %d moves", n)
	}
	ws, err := s.List(ctx)
	if err != nil || len(ws) != 1 || ws[0].Digest != current.String() || ws[0].Error != "registry down" {
		t.Errorf("after a failed check: %+v, %v", ws, err)
	}
	// Adding again keeps the digest (no move is invented).
	if err := s.Add(ctx, tagwatch.Watch{Ref: "host:5000/repo:1", Platform: "linux/arm64", Prepull: true}); err != nil {
		t.Fatal(err)
	}
	if ws, _ := s.List(ctx); len(ws) != 1 || !ws[0].Prepull || ws[0].Digest != current.String() {
		t.Errorf("after adding again: %+v", ws)
	}
}
