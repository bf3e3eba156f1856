package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// TestEarlyOutput: the export starts at the miss that names the layers,
// lands in the destination when the pull's snapshot is that chain, and
// leaves nothing beside the destination when it is not (or the pull
// failed): the export is stopped and its directory removed.
func TestEarlyOutput(t *testing.T) {
	t.Parallel()
	layers := []events.Layer{{DiffID: digest.FromString("layer")}}
	key := snapshot.ChainIDs(layers)[0].String()
	miss := events.New(events.CacheMiss{CacheOpts: &events.CacheOpts{Layers: layers}})
	var passed int
	next := func(events.Event) { passed++ }

	t.Run("used", func(t *testing.T) {
		t.Parallel()
		parent := t.TempDir()
		dest := filepath.Join(parent, "rootfs")
		o := newEarlyOutput(t.Context(), dest, func(_ context.Context, _ []events.Layer, dir string) error {
			return os.WriteFile(filepath.Join(dir, "file"), []byte("verified"), 0o600)
		})
		defer o.close()
		o.event(func(events.Event) {})(miss)
		w, ok := o.writer(key)
		if !ok {
			t.Fatal("the early export is not used for its own chain")
		}
		if err := writeOutput(t.Context(), outputSpec{Type: outputLocal, Dest: dest}, nil, w); err != nil {
			t.Fatal(err)
		}
		o.close()
		if b, err := os.ReadFile(filepath.Join(dest, "file")); err != nil || string(b) != "verified" {
			t.Errorf("destination file: %q, %v", b, err)
		}
		if es, _ := os.ReadDir(parent); len(es) != 1 {
			t.Errorf("beside the destination: %v, want only it", es)
		}
	})

	t.Run("not used", func(t *testing.T) {
		t.Parallel()
		parent := t.TempDir()
		dest := filepath.Join(parent, "rootfs")
		stopped := errors.New("not stopped")
		o := newEarlyOutput(t.Context(), dest, func(ctx context.Context, _ []events.Layer, dir string) error {
			if err := os.WriteFile(filepath.Join(dir, "half"), []byte("unverified"), 0o600); err != nil {
				return err
			}
			<-ctx.Done() // a chain the pull never commits
			stopped = context.Cause(ctx)
			return stopped
		})
		o.event(next)(miss)
		if passed == 0 {
			t.Error("the event was not passed on")
		}
		if _, ok := o.writer("sha256:another"); ok {
			t.Error("the early export is used for another snapshot")
		}
		o.close()
		if stopped == nil || stopped.Error() == "not stopped" {
			t.Errorf("the export was not stopped: %v", stopped)
		}
		if es, _ := os.ReadDir(parent); len(es) != 0 {
			t.Errorf("beside the destination after a pull that did not use it: %v", es)
		}
	})
}
