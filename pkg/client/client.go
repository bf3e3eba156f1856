// Package client is what a program that asks Stevedore for sources uses:
// it starts a build (publishes source.resolve.requested), follows the
// build's events, and sums them up.
//
// Vocabulary: a build is identified by its build id (NewBuildID makes
// one); its events are on stevedore.build.<id>.>. A resolve asks for a
// source's keys and ends with cache.hit, cache.miss or source.failed; a
// pull asks for its content too and ends with cache.hit, snapshot.ready,
// snapshot.failed or source.failed. Outcome is the sum of a build's events:
// the keys of every index, the pin, the snapshot, and how it ended.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// NewBuildID returns a fresh build id: a sortable time prefix and random
// bits, valid as a subject token.
func NewBuildID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%s", time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

// Terminal reports whether e ends its build whatever the build asked for:
// a hit, a failure, or the snapshot's end. (cache.miss ends a resolve but
// not a pull; Outcome.Done knows which.)
func Terminal(e events.Event) bool {
	switch e.Type() {
	case events.TypeCacheHit, events.TypeSourceFailed, events.TypeSnapshotReady, events.TypeSnapshotFailed:
		return true
	}
	return false
}

// Submit publishes the event that starts build buildID for req and returns
// it.
func Submit(ctx context.Context, js jetstream.JetStream, buildID string, req events.SourceResolveRequested) (events.Event, error) {
	if err := events.ValidateBuildID(buildID); err != nil {
		return events.Event{}, err
	}
	host, _ := os.Hostname()
	e := events.New(req)
	e.ID = buildID + "-request"
	e.BuildID = buildID
	e.Source = "/stevedore/client/" + host
	e.Time = time.Now()
	if err := bus.NewPublisher(js).Publish(ctx, e); err != nil {
		return events.Event{}, err
	}
	return e, nil
}

// Follow calls fn for every event of the build, stored ones first, until fn
// returns false, ctx is done, or (when untilDone is set) the event that
// ends the build (see Outcome.Done) has been passed to fn. Events that do
// not decode are skipped.
func Follow(ctx context.Context, js jetstream.JetStream, buildID string, untilDone bool, fn func(events.Event) bool) error {
	w, err := bus.WatchBuild(ctx, js, buildID)
	if err != nil {
		// A ctx that ended before the watch started reports its cause, as
		// one that ends while waiting does.
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return err
	}
	defer w.Stop()
	stop := context.AfterFunc(ctx, w.Stop)
	defer stop()
	var out Outcome
	for {
		e, err := w.Next()
		if errors.Is(err, bus.ErrInvalid) {
			continue
		}
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
			return err
		}
		out.Add(e)
		if !fn(e) || (untilDone && out.Done()) {
			return nil
		}
	}
}

// Outcome sums up a finished build.
type Outcome struct {
	// BuildID is the build.
	BuildID string `json:"buildID"`
	// Source is the canonical source, once the resolver has seen it.
	Source events.SourceOp `json:"source"`
	// Keys are the keys computed, by index (a hit at index 0 leaves one).
	Keys []events.CacheKey `json:"keys"`
	// Pin is the content the keys are pinned to (the top-level digest).
	Pin string `json:"pin,omitempty"`
	// Hit is set when the build ended with a cache hit.
	Hit *events.CacheHit `json:"hit,omitempty"`
	// Miss is set when every key missed.
	Miss *events.CacheMiss `json:"miss,omitempty"`
	// Failed is set when the build failed before its snapshot step.
	Failed *events.SourceFailed `json:"failed,omitempty"`
	// Snapshot is set when the snapshot is ready.
	Snapshot *events.SnapshotReady `json:"snapshot,omitempty"`
	// SnapshotFailed is set when the snapshot could not be made.
	SnapshotFailed *events.SnapshotFailed `json:"snapshotFailed,omitempty"`
	// Pull is set when the build asked for the snapshot, not only the keys.
	Pull bool `json:"pull,omitempty"`
}

// Add folds one event into the outcome.
func (o *Outcome) Add(e events.Event) {
	o.BuildID = e.BuildID
	switch p := e.Data.(type) {
	case events.SourceResolveRequested:
		o.Pull = p.Snapshot
		if o.Source.Identifier == "" {
			o.Source = p.Source
		}
	case events.SourceResolved:
		o.Source = p.Source
	case events.CacheKeyComputed:
		o.setKey(p.Key)
	case events.CacheHit:
		o.Source = p.Source
		o.setKey(p.Key)
		o.Hit = &p
	case events.CacheMiss:
		o.Source = p.Source
		for _, k := range p.Keys {
			o.setKey(k)
		}
		o.Miss = &p
	case events.SourceFailed:
		if o.Source.Identifier == "" {
			o.Source = p.Source
		}
		o.Failed = &p
	case events.SnapshotReady:
		o.Snapshot = &p
	case events.SnapshotFailed:
		o.SnapshotFailed = &p
	}
}

func (o *Outcome) setKey(k events.CacheKey) {
	for len(o.Keys) <= k.Index {
		o.Keys = append(o.Keys, events.CacheKey{Index: len(o.Keys)})
	}
	o.Keys[k.Index] = k
	if k.Pin != "" {
		o.Pin = k.Pin
	}
}

// Done reports whether the build is over: a hit, a failure, the end of
// the snapshot step, or a miss when no snapshot was asked for.
func (o *Outcome) Done() bool {
	return o.Hit != nil || o.Failed != nil || o.Snapshot != nil || o.SnapshotFailed != nil || (o.Miss != nil && !o.Pull)
}

// Err is the build's failure as an error, nil if it did not fail.
func (o *Outcome) Err() error {
	switch {
	case o.Failed != nil:
		return &BuildError{Failure: *o.Failed}
	case o.SnapshotFailed != nil:
		return &BuildError{Failure: events.SourceFailed(*o.SnapshotFailed)}
	}
	return nil
}

// BuildError is a failed build.
type BuildError struct {
	// Failure is the source.failed payload.
	Failure events.SourceFailed
}

func (e *BuildError) Error() string { return e.Failure.Reason }

// Resolve starts a build for op's keys and follows it to its end, calling
// each (when not nil) for every event on the way. The watch replays the
// build from its first event, so nothing published before it starts is
// missed.
func Resolve(ctx context.Context, js jetstream.JetStream, buildID string, op events.SourceOp, each func(events.Event)) (Outcome, error) {
	return run(ctx, js, buildID, events.SourceResolveRequested{Source: op}, each)
}

// Pull is Resolve for op's content: on a miss, the build goes on to the
// snapshot.
func Pull(ctx context.Context, js jetstream.JetStream, buildID string, op events.SourceOp, each func(events.Event)) (Outcome, error) {
	return run(ctx, js, buildID, events.SourceResolveRequested{Source: op, Snapshot: true}, each)
}

func run(ctx context.Context, js jetstream.JetStream, buildID string, req events.SourceResolveRequested, each func(events.Event)) (Outcome, error) {
	out := Outcome{BuildID: buildID, Pull: req.Snapshot}
	if _, err := Submit(ctx, js, buildID, req); err != nil {
		return out, err
	}
	err := Follow(ctx, js, buildID, true, func(e events.Event) bool {
		out.Add(e)
		if each != nil {
			each(e)
		}
		return true
	})
	if err != nil {
		return out, err
	}
	return out, out.Err()
}

// ErrNoFleet is returned by WaitReady when the server has no Stevedore
// topology: nothing provisioned the events stream (yet).
var ErrNoFleet = errors.New("no Stevedore fleet on this NATS server: stream " + events.StreamEvents + " not found")

// WaitReady waits up to wait for the events stream to exist, so that a
// client started together with `stevedore up` does not publish before the
// fleet has provisioned it.
func WaitReady(ctx context.Context, js jetstream.JetStream, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := js.Stream(ctx, events.StreamEvents)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		if time.Now().After(deadline) {
			return ErrNoFleet
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
