package main

import (
	"context"
	"errors"
	"os"
	"sync"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// earlyOutput writes the root filesystem of an embedded pull's image into
// a directory beside the destination while the pull runs: once the keys
// missed and the layers are known, snapshot.ExportChain writes each layer
// as soon as the embedded snapshotter has committed (verified) it. The
// pull's snapshot is still made; DIR is written from it, not from a second
// decompression, and moved into place only once the pull ended well and
// the chain written is the snapshot's.
type earlyOutput struct {
	dest string
	// export writes the chain into dir (the store's ExportChain, bound to
	// the command's context); cancel stops it.
	export func(layers []events.Layer, dir string) error
	cancel context.CancelCauseFunc

	once sync.Once
	// key is the chain's top snapshot, tmp the directory it is written
	// into; set once the export started, and done closed when it ended
	// with err.
	key  string
	tmp  string
	done chan struct{}
	err  error
}

// newEarlyOutput writes into a directory beside dest with export (the
// embedded store's ExportChain) once the layers are known.
func newEarlyOutput(ctx context.Context, dest string, export func(ctx context.Context, layers []events.Layer, dir string) error) *earlyOutput {
	ctx, cancel := context.WithCancelCause(ctx)
	return &earlyOutput{
		dest:   dest,
		export: func(layers []events.Layer, dir string) error { return export(ctx, layers, dir) },
		cancel: cancel,
	}
}

// event starts the export at the first event that names the image's
// layers (a miss's, or a hit's), and passes every event to next.
func (o *earlyOutput) event(next func(events.Event)) func(events.Event) {
	return func(e events.Event) {
		var opts *events.CacheOpts
		switch p := e.Data.(type) {
		case events.CacheMiss:
			opts = p.CacheOpts
		case events.CacheHit:
			opts = p.CacheOpts
		}
		if opts != nil && len(opts.Layers) > 0 {
			o.once.Do(func() { o.start(opts.Layers) })
		}
		next(e)
	}
}

func (o *earlyOutput) start(layers []events.Layer) {
	chain := snapshot.ChainIDs(layers)
	o.key = chain[len(chain)-1].String()
	o.done = make(chan struct{})
	tmp, err := besideDir(o.dest)
	if err != nil {
		o.err = err
		close(o.done)
		return
	}
	o.tmp = tmp
	go func() {
		defer close(o.done)
		o.err = o.export(layers, tmp)
	}()
}

// writer is the rootfs writer that moves the early export into place, when
// the pull's snapshot is key and the export started; ok is false
// otherwise (the export is then stopped and removed by close).
func (o *earlyOutput) writer(key string) (rootfsWriter, bool) {
	started := false
	o.once.Do(func() {}) // no export starts after this
	if o.done != nil && o.key == key {
		started = true
	}
	if !started {
		return rootfsWriter{}, false
	}
	return rootfsWriter{
		from: "snapshot " + key + " on this node, written as its layers were committed",
		place: func(ctx context.Context, dest string) error {
			select {
			case <-o.done:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if o.err != nil {
				return o.err
			}
			return moveDir(ctx, o.tmp, dest)
		},
	}, true
}

// close stops the export and removes what it left beside the destination.
func (o *earlyOutput) close() {
	o.cancel(errors.New("the pull's output is written"))
	o.once.Do(func() {})
	if o.done == nil {
		return
	}
	<-o.done
	if o.tmp != "" {
		_ = os.RemoveAll(o.tmp)
	}
}
