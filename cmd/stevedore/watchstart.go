package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// errNoBuild is the cause of a watch's context when the build it watches
// has no event after the start timeout.
type errNoBuild struct {
	build string
	after time.Duration
}

func (e errNoBuild) Error() string {
	return fmt.Sprintf("build %s: no such build (no event within %s; check the id, or wait longer with --start-timeout)", e.build, e.after)
}

// startWait cancels a watch whose build shows no event within a timeout.
type startWait struct {
	mu    sync.Mutex
	seen  bool
	timer *time.Timer
}

// waitForStart returns a context that ends with errNoBuild unless seen is
// called within after; after 0 waits forever.
func waitForStart(ctx context.Context, build string, after time.Duration) (context.Context, *startWait, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &startWait{}
	if after > 0 {
		w.timer = time.AfterFunc(after, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if !w.seen {
				cancel(errNoBuild{build: build, after: after})
			}
		})
	}
	return ctx, w, func() {
		if w.timer != nil {
			w.timer.Stop()
		}
		cancel(nil)
	}
}

// saw records that the build has an event.
func (w *startWait) saw() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = true
}
