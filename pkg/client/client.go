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

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// NewBuildID returns a fresh build id: a sortable time prefix and random
// bits, valid as a subject token.
func NewBuildID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%s", time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

// Terminal reports whether e ends its build whatever the build asked for:
// the catalog's terminal events (a hit, a failure, the snapshot's end, the
// end of a cache export or import), a hit only when the build wants no
// snapshot. (cache.miss ends a resolve but not a pull; Outcome.Done knows
// which.)
func Terminal(e events.Event) bool {
	if e.Data == nil {
		return false
	}
	if hit, ok := e.Data.(events.CacheHit); ok && hit.Snapshot {
		return false
	}
	spec, ok := events.Lookup(e.Data.EventType())
	return ok && spec.Terminal
}

// Submit publishes the event that starts build buildID for req and returns
// it.
func Submit(ctx context.Context, js jetstream.JetStream, buildID string, req events.SourceResolveRequested) (events.Event, error) {
	return submit(ctx, js, buildID, req, buildID+"-request")
}

// SubmitCache publishes a cache.export.requested or cache.import.requested
// on build buildID (a build of its own, or the build whose sources it
// exports, so that watchers of that build see it) and returns it. Its id is
// fresh, so a build can export more than once.
func SubmitCache(ctx context.Context, js jetstream.JetStream, buildID string, req events.Payload) (events.Event, error) {
	switch req.(type) {
	case events.CacheExportRequested, events.CacheImportRequested:
	default:
		return events.Event{}, fmt.Errorf("SubmitCache: %s is not a cache request", req.EventType())
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return submit(ctx, js, buildID, req, buildID+"-"+events.NameOf(req.EventType())+"-"+hex.EncodeToString(b[:]))
}

func submit(ctx context.Context, js jetstream.JetStream, buildID string, req events.Payload, id string) (events.Event, error) {
	if err := events.ValidateBuildID(buildID); err != nil {
		return events.Event{}, err
	}
	// Everything published is stored for every watcher to read: a source
	// with credentials in its URL never leaves the client.
	if r, ok := req.(events.SourceResolveRequested); ok {
		if err := source.RefuseCredentials(r.Source); err != nil {
			return events.Event{}, err
		}
	}
	host, _ := os.Hostname()
	e := events.New(req)
	e.ID = id
	e.BuildID = buildID
	e.Source = "/stevedore/client/" + host
	e.Time = time.Now()
	// Every session the request names must have signed it, or the fleet
	// refuses it: this process signs with the keys of the sessions it
	// serves.
	if err := session.SignRequest(&e); err != nil {
		return events.Event{}, err
	}
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
		if errors.Is(err, failure.ErrInvalid) {
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
	// SnapshotBy is the node of the snapshotter replica that makes the
	// snapshot of a builder's remote snapshot itself (a pull that has no
	// snapshot.requested).
	SnapshotBy string `json:"snapshotBy,omitempty"`
	// Exported is set when a cache export of the build ended well.
	Exported *events.CacheExported `json:"exported,omitempty"`
	// Imported is set when a cache import ended well.
	Imported *events.CacheImported `json:"imported,omitempty"`
	// CacheFailed is set when a cache export or import failed.
	CacheFailed *events.SourceFailed `json:"cacheFailed,omitempty"`

	// asked tells whether a source was asked for; cacheAsked and
	// cacheEnded count the cache requests and their ends.
	asked                  bool
	cacheAsked, cacheEnded int
}

// Add folds one event into the outcome.
func (o *Outcome) Add(e events.Event) {
	o.BuildID = e.BuildID
	switch p := e.Data.(type) {
	case events.SourceResolveRequested:
		o.asked = true
		o.Pull = p.Snapshot || p.SnapshotBy != ""
		o.SnapshotBy = p.SnapshotBy
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
	case events.CacheExportRequested, events.CacheImportRequested:
		o.cacheAsked++
	case events.CacheExported:
		o.cacheEnded++
		o.Exported = &p
	case events.CacheImported:
		o.cacheEnded++
		o.Imported = &p
	case events.CacheExportFailed, events.CacheImportFailed:
		o.cacheEnded++
		f, _ := events.Failure(p)
		o.CacheFailed = &f
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

// Done reports whether the build is over: a hit (unless a snapshot of an
// imported cache follows it), a failure, the end of the snapshot step, or a
// miss when no snapshot was asked for. A builder's remote snapshot
// (SnapshotBy) is over only at its snapshot's end or a failure.
// With cache requests in the build, it is over when each has ended too.
func (o *Outcome) Done() bool {
	source := (o.Hit != nil && !o.Hit.Snapshot) || o.Failed != nil || o.Snapshot != nil || o.SnapshotFailed != nil || (o.Miss != nil && !o.Pull)
	if o.SnapshotBy != "" { // a remote snapshot: a hit or a miss is followed by its snapshot
		source = o.Failed != nil || o.Snapshot != nil || o.SnapshotFailed != nil
	}
	if o.cacheAsked > 0 {
		return o.cacheEnded >= o.cacheAsked && (!o.asked || source)
	}
	return source
}

// Err is the build's failure as an error, nil if it did not fail.
func (o *Outcome) Err() error {
	switch {
	case o.Failed != nil:
		return &BuildError{Failure: *o.Failed}
	case o.SnapshotFailed != nil:
		return &BuildError{Failure: events.SourceFailed(*o.SnapshotFailed)}
	case o.CacheFailed != nil:
		return &BuildError{Failure: *o.CacheFailed}
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
	return Run(ctx, js, buildID, events.SourceResolveRequested{Source: op}, each)
}

// Pull is Resolve for op's content: on a miss, the build goes on to the
// snapshot.
func Pull(ctx context.Context, js jetstream.JetStream, buildID string, op events.SourceOp, each func(events.Event)) (Outcome, error) {
	return Run(ctx, js, buildID, events.SourceResolveRequested{Source: op, Snapshot: true}, each)
}

// Run starts the build req asks for (a resolve, or a pull with
// req.Snapshot; in the client session req.Session, whose secrets and
// content the fleet reads) and follows it to its end, as Resolve does.
func Run(ctx context.Context, js jetstream.JetStream, buildID string, req events.SourceResolveRequested, each func(events.Event)) (Outcome, error) {
	return follow(ctx, js, buildID, each, func() (events.Event, error) { return Submit(ctx, js, buildID, req) })
}

// ExportCache asks for a cache export on build buildID (see SubmitCache)
// and follows the build until the export ends: Outcome.Exported, or an
// error whose BuildError names the failure.
//
// A local target (type=local,dest=DIR) is written by this client: it
// makes DIR with its own rights and serves it in a session of its own
// while the export runs (unless req names a session already), and the
// fleet writes the cache through that session; a DIR the client cannot
// make fails here, before anything is asked.
func ExportCache(ctx context.Context, js jetstream.JetStream, buildID string, req events.CacheExportRequested, each func(events.Event)) (Outcome, error) {
	stop, err := exportSession(ctx, js, buildID, &req)
	if err != nil {
		return Outcome{BuildID: buildID}, err
	}
	out, err := runCache(ctx, js, buildID, req, each)
	stop(err != nil || out.Exported == nil || out.Exported.Manifest.Digest == "")
	return out, err
}

// ImportCache asks for a cache import on build buildID and follows it
// until it ends: Outcome.Imported, or an error.
//
// A local source (type=local,src=DIR) is read by this client, with its
// rights, and served in a session of its own while the import runs
// (unless req names a session already). The imported records name that
// session as where their blobs are: pulls read them from the cache while
// a session of that id serves, and from the origin once it is gone. A
// client that wants later pulls to read the cache serves the layout in a
// session it keeps (req.Session, req.Store).
func ImportCache(ctx context.Context, js jetstream.JetStream, buildID string, req events.CacheImportRequested, each func(events.Event)) (Outcome, error) {
	stop, err := ServeImport(ctx, js, buildID, &req)
	if err != nil {
		return Outcome{BuildID: buildID}, err
	}
	defer stop()
	return runCache(ctx, js, buildID, req, each)
}

func runCache(ctx context.Context, js jetstream.JetStream, buildID string, req events.Payload, each func(events.Event)) (Outcome, error) {
	return follow(ctx, js, buildID, each, func() (events.Event, error) { return SubmitCache(ctx, js, buildID, req) })
}

// follow submits, then folds the build's events into an Outcome until it
// is done. Only the events from the submitted one on are folded, so a
// build that already ended before (a pull, then its export) is followed to
// the end of what was asked now.
func follow(ctx context.Context, js jetstream.JetStream, buildID string, each func(events.Event), submit func() (events.Event, error)) (Outcome, error) {
	out := Outcome{BuildID: buildID}
	req, err := submit()
	if err != nil {
		return out, err
	}
	seen := false
	err = Follow(ctx, js, buildID, false, func(e events.Event) bool {
		if e.ID == req.ID {
			seen = true
		}
		if !seen {
			return true
		}
		out.Add(e)
		if each != nil {
			each(e)
		}
		return !out.Done()
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
