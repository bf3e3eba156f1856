package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// Build makes a parentless snapshot from what fill writes, once for
// concurrent callers, and commits nothing when fill fails.
func TestBuild(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			needKind(t, kind)
			s := openStore(t, kind)
			ctx := t.Context()
			var calls atomic.Int32
			fill := func(_ context.Context, dir string) error {
				calls.Add(1)
				return os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644)
			}
			var wg sync.WaitGroup
			results := make([]bool, 8)
			for i := range results {
				wg.Go(func() {
					res, err := s.Build(ctx, "content-a", fill)
					if err != nil {
						t.Error(err)
						return
					}
					if res.Key != "content-a" || res.Size != 6 {
						t.Errorf("Build = %+v", res)
					}
					results[i] = res.Made
				})
			}
			wg.Wait()
			made := 0
			for _, m := range results {
				if m {
					made++
				}
			}
			if calls.Load() != 1 || made != 1 {
				t.Errorf("fill ran %d times, %d callers made it; want 1 and 1", calls.Load(), made)
			}
			if !s.HasKey(ctx, "content-a") {
				t.Error("content-a is not committed")
			}
			again, err := s.Build(ctx, "content-a", func(context.Context, string) error { t.Error("fill ran for an existing snapshot"); return nil })
			if err != nil || again.Made || again.Size != 6 {
				t.Errorf("Build of an existing snapshot = %+v, %v", again, err)
			}

			boom := errors.New("boom")
			if _, err := s.Build(ctx, "content-b", func(_ context.Context, dir string) error {
				_ = os.WriteFile(filepath.Join(dir, "half"), []byte("x"), 0o644)
				return boom
			}); !errors.Is(err, boom) {
				t.Errorf("Build with a failing fill = %v", err)
			}
			if s.HasKey(ctx, "content-b") {
				t.Error("a failed Build committed its snapshot")
			}
			n := 0
			_ = s.Snapshotter().Walk(ctx, func(_ context.Context, info snapshots.Info) error {
				if info.Kind != snapshots.KindCommitted {
					n++
				}
				return nil
			})
			if n != 0 {
				t.Errorf("%d active snapshots left", n)
			}
			// Prune keeps a content snapshot named in keep, removes it otherwise.
			if res, err := s.Prune(ctx, []string{"content-a"}); err != nil || res.Snapshots != 0 {
				t.Errorf("Prune keeping content-a = %+v, %v", res, err)
			}
			if res, err := s.Prune(ctx, nil); err != nil || res.Snapshots != 1 {
				t.Errorf("Prune = %+v, %v", res, err)
			}
		})
	}
}
