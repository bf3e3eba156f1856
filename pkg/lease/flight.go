package lease

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Flight runs work once across the fleet per key and shares the result
// through a KV bucket of results.
type Flight struct {
	leases  *Manager
	results jetstream.KeyValue
}

// NewFlight returns a Flight whose leases live in leases' bucket and whose
// results live in the results bucket (keys are shared between the two).
func NewFlight(ctx context.Context, js jetstream.JetStream, leases *Manager, resultsBucket string) (*Flight, error) {
	kv, err := js.KeyValue(ctx, resultsBucket)
	if err != nil {
		return nil, fmt.Errorf("flight: bucket %s: %w", resultsBucket, err)
	}
	return &Flight{leases: leases, results: kv}, nil
}

// Outcome says how Do got its result.
type Outcome int

// The outcomes of Do.
const (
	// Stored: an acceptable result was already stored.
	Stored Outcome = iota
	// Ran: this caller held the lease and ran the work.
	Ran
	// Followed: another caller ran the work; this one waited for its result.
	Followed
)

// Result is what Do returns.
type Result struct {
	// Value is the stored result.
	Value []byte
	// Outcome says where Value came from.
	Outcome Outcome
}

// Do returns an acceptable stored result for key, or runs work under the
// key's lease and stores what it returns, or waits for the holder of the
// lease to do so. accept decides whether a stored value answers this caller
// (nil accepts any). When the holder fails or dies without storing an
// acceptable result, a waiter takes the lease and runs work itself; work's
// error is returned only to the caller that ran it.
func (f *Flight) Do(ctx context.Context, key string, accept func([]byte) bool, work func(context.Context) ([]byte, error)) (Result, error) {
	if accept == nil {
		accept = func([]byte) bool { return true }
	}
	outcome := Stored
	for {
		if v, ok, err := f.get(ctx, key, accept); err != nil {
			return Result{}, err
		} else if ok {
			return Result{Value: v, Outcome: outcome}, nil
		}
		l, err := f.leases.Acquire(ctx, key)
		if errors.Is(err, ErrHeld) {
			outcome = Followed
			if err := f.wait(ctx, key, accept); err != nil {
				return Result{}, err
			}
			continue
		}
		if err != nil {
			return Result{}, err
		}
		return f.run(ctx, l, key, accept, work)
	}
}

func (f *Flight) run(ctx context.Context, l *Lease, key string, accept func([]byte) bool, work func(context.Context) ([]byte, error)) (Result, error) {
	defer func() { _ = l.Release(context.WithoutCancel(ctx)) }()
	// The previous holder may have stored a result between our read and our
	// acquire.
	if v, ok, err := f.get(ctx, key, accept); err != nil || ok {
		return Result{Value: v, Outcome: Followed}, err
	}
	v, err := work(ctx)
	if err != nil {
		return Result{}, err
	}
	if _, err := f.results.Put(ctx, key, v); err != nil {
		return Result{}, fmt.Errorf("flight %s: store result: %w", key, err)
	}
	return Result{Value: v, Outcome: Ran}, nil
}

func (f *Flight) get(ctx context.Context, key string, accept func([]byte) bool) ([]byte, bool, error) {
	e, err := f.results.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("flight %s: %w", key, err)
	}
	return e.Value(), accept(e.Value()), nil
}

// wait blocks until the key's lease is gone (released, expired) or an
// acceptable result is stored, whichever comes first.
func (f *Flight) wait(ctx context.Context, key string, accept func([]byte) bool) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errors.New("flight wait over"))
	lw, err := f.leases.watch(ctx, key)
	if err != nil {
		return fmt.Errorf("flight %s: watch lease: %w", key, err)
	}
	defer func() { _ = lw.Stop() }()
	rw, err := f.results.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("flight %s: watch result: %w", key, err)
	}
	defer func() { _ = rw.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("flight %s: %w", key, context.Cause(ctx))
		case e, ok := <-lw.Updates():
			if !ok {
				return fmt.Errorf("flight %s: lease watch closed", key)
			}
			// nil marks the end of the initial state; a missing or deleted
			// key means the holder is gone.
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				return nil
			}
			if e == nil {
				if held, err := f.leases.Held(ctx, key); err != nil || !held {
					return err
				}
			}
		case e, ok := <-rw.Updates():
			if !ok {
				return fmt.Errorf("flight %s: result watch closed", key)
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut && accept(e.Value()) {
				return nil
			}
		}
	}
}

// Get returns the stored result for key, whatever its age; found is false
// when there is none.
func (f *Flight) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	return f.get(ctx, key, func([]byte) bool { return true })
}

// maxUpdateTries bounds Update's compare-and-set retries.
const maxUpdateTries = 8

// Update stores what change makes of key's stored result (old is nil and
// found false when there is none), with compare-and-set: when another
// writer changed the key in between, change runs again on the newer
// value. It takes no lease: it is for merging into a shared result
// without running its work (a memory of what was seen).
//
// Errors: change's; ErrContended when other writers won maxUpdateTries
// times in a row; the bucket's.
func (f *Flight) Update(ctx context.Context, key string, change func(old []byte, found bool) ([]byte, error)) error {
	for range maxUpdateTries {
		var old []byte
		var rev uint64
		e, err := f.results.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			return fmt.Errorf("flight %s: %w", key, err)
		default:
			old, rev = e.Value(), e.Revision()
		}
		v, err := change(old, rev != 0)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = f.results.Create(ctx, key, v)
		} else {
			_, err = f.results.Update(ctx, key, v, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("flight %s: update: %w", key, err)
		}
	}
	return fmt.Errorf("flight %s: %w", key, ErrContended)
}

// ErrContended is returned by Update when other writers kept changing the
// key; trying again later may succeed.
var ErrContended = errors.New("other writers kept changing the result")

// Refresh runs work under key's lease and stores what it returns, whatever
// result is stored already. It never waits: when another caller holds the
// lease it returns ErrHeld at once, that caller doing the work for
// everyone. It is for revalidating a result in the background.
//
// Errors: ErrHeld; work's; the buckets'.
func (f *Flight) Refresh(ctx context.Context, key string, work func(context.Context) ([]byte, error)) error {
	l, err := f.leases.Acquire(ctx, key)
	if err != nil {
		return err
	}
	defer func() { _ = l.Release(context.WithoutCancel(ctx)) }()
	v, err := work(ctx)
	if err != nil {
		return err
	}
	if _, err := f.results.Put(ctx, key, v); err != nil {
		return fmt.Errorf("flight %s: store result: %w", key, err)
	}
	return nil
}
