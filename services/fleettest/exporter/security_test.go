package exporter_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// poisonedCache is the attack of a client that knows another image's
// index-0 key (resolve --json prints it): it pulls an image of its own,
// exports its cache, and renames the record of its own index-0 key to the
// victim's record digest, so that the cache claims its layers are the
// victim's image. It returns the cache directory.
func poisonedCache(t *testing.T, f *fleet, victimKey0 string) string {
	t.Helper()
	evil := f.Push(t, "buildkit-base", "evil/app:1")
	build, ready := f.pull(t, evil)
	dir := filepath.Join(t.TempDir(), "poison")
	if _, err := f.export(t, build, events.CacheExportRequested{Target: "type=local,dest=" + dir, Build: build}); err != nil {
		t.Fatal(err)
	}
	var own string
	for _, k := range ready.Keys {
		if k.Index == 0 {
			own = cachefmt.RecordDigest(k.Digest, 0).String()
		}
	}
	victim := cachefmt.RecordDigest(source.SolverDigest(victimKey0), 0).String()
	l, err := ocilayout.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := l.Resolve(t.Context(), "latest")
	if err != nil {
		t.Fatal(err)
	}
	data, err := l.ReadBlob(t.Context(), top, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cachefmt.ReadManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := l.ReadBlob(t.Context(), m.Config, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte(own)) {
		t.Fatalf("the exported cache has no record %s", own)
	}
	cfg = bytes.ReplaceAll(cfg, []byte(own), []byte(victim))
	cd := ocispec.Descriptor{MediaType: cachefmt.MediaTypeConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if _, err := l.WriteBlobBytes(t.Context(), cd, cfg); err != nil {
		t.Fatal(err)
	}
	mdata, md, err := cachefmt.BuildManifest(cachefmt.FormImageManifest, true, m.Layers, cd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteBlobBytes(t.Context(), md, mdata); err != nil {
		t.Fatal(err)
	}
	if err := l.Tag(t.Context(), md, "latest"); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Finding 1: one client's cache import never changes another client's
// result. A cache whose record claims the victim's index-0 key but names
// the attacker's layers is imported; the victim, who imports nothing,
// must still get its own image: no hit answered from the forged record,
// and a pull that makes the victim's own snapshot.
func TestSecurityImportCannotPoison(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	victimImg := fx.Images["single"]
	key0 := victimImg.Field(t, "linux/amd64", "key0")
	key1 := victimImg.Field(t, "linux/amd64", "key1")

	f := newFleet(t)
	victim := f.Push(t, "single", "victim/app:1")
	dir := poisonedCache(t, f, key0)
	f.fresh(t)
	out, err := f.importCache(t, "type=local,src="+dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Imported.Records) == 0 {
		t.Fatal("the poisoned cache imported no record: the attack was not tried")
	}

	// A resolve of the victim's image (no import named).
	switch e := fleettest.Final(t, f.Resolve(t, "docker-image://"+victim, nil, "linux/amd64")).Data.(type) {
	case events.CacheHit:
		t.Errorf("resolve of the victim's image hit at index %d with the attacker's record (chainID %s, %d layers)", e.Key.Index, e.Record.ChainID, len(e.Record.Layers))
	case events.CacheMiss:
	default:
		t.Errorf("resolve ended with %s", e.EventType())
	}

	// A pull of the victim's image makes the victim's own snapshot.
	rec, _ := f.Request(t, "docker-image://"+victim, nil, "linux/amd64", true)
	end := fleettest.PullEnd(t, rec)
	ready, ok := end.Data.(events.SnapshotReady)
	if !ok {
		t.Fatalf("pull of the victim's image ended with %s, want snapshot.ready", bustest.Summary([]events.Event{end}))
	}
	if got := ready.ChainID; got != key1 {
		t.Errorf("pull of the victim's image made snapshot %s, want its own chainID %s", got, key1)
	}
}

// submitRaw publishes a cache request as a client that bypasses the client
// library would (no session served for it), and folds its build's events
// from the request on until the request ends.
func (f *fleet) submitRaw(t *testing.T, buildID string, req events.Payload) client.Outcome {
	t.Helper()
	ctx := ctxFor(t)
	sent, err := client.SubmitCache(ctx, f.Env.JS, buildID, req)
	if err != nil {
		t.Fatal(err)
	}
	out := client.Outcome{BuildID: buildID}
	seen := false
	err = client.Follow(ctx, f.Env.JS, buildID, false, func(e events.Event) bool {
		seen = seen || e.ID == sent.ID
		if !seen {
			return true
		}
		out.Add(e)
		return !out.Done()
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Finding 5: paths a client names (export-cache's dest, import-cache's
// src) are read and written by the client, with its rights, and their
// bytes cross its session; the fleet never opens them. A request naming a
// path and no session is refused without the path being touched; a client
// that cannot write a destination fails itself, before asking the fleet.
func TestSecurityFleetOpensNoClientPath(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	img := f.Push(t, "single", "paths/app:1")
	build, _ := f.pull(t, img)

	// A hostile or old client names a directory for the fleet to make.
	dest := filepath.Join(t.TempDir(), "made-by-the-fleet")
	out := f.submitRaw(t, build, events.CacheExportRequested{Target: "type=local,dest=" + dest, Build: build})
	if _, err := os.Lstat(dest); err == nil {
		t.Errorf("the fleet created %s, a path the client named", dest)
	}
	if out.CacheFailed == nil || !strings.Contains(out.CacheFailed.Reason, "session") {
		t.Errorf("an export naming a path and no session: %+v, want cache.export.failed naming the session", out)
	}

	// The client library writes the layout itself, through its session.
	good := filepath.Join(t.TempDir(), "cache")
	if _, err := f.export(t, build, events.CacheExportRequested{Target: "type=local,dest=" + good, Build: build}); err != nil {
		t.Fatal(err)
	}
	l, err := ocilayout.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Resolve(t.Context(), "latest"); err != nil {
		t.Fatalf("the export through the session wrote no tagged cache: %v", err)
	}

	// A layout the client does not serve is never read by the fleet.
	out = f.submitRaw(t, "import-raw", events.CacheImportRequested{Source: "type=local,src=" + good})
	if out.Imported != nil && len(out.Imported.Records) > 0 {
		t.Errorf("the fleet read the layout at %s, a path the client named: %d records imported", good, len(out.Imported.Records))
	}
	if out.CacheFailed == nil || !strings.Contains(out.CacheFailed.Reason, "session") {
		t.Errorf("an import naming a path and no session: %+v, want cache.import.failed naming the session", out)
	}

	// A destination the client cannot make fails in the client.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = f.export(t, build, events.CacheExportRequested{Target: "type=local,dest=" + filepath.Join(file, "cache"), Build: build})
	var buildErr *client.BuildError
	if err == nil || errors.As(err, &buildErr) {
		t.Errorf("export to a path under a file: %v, want the client's own error before any request", err)
	}
}

// publishAs publishes req on build buildID with event id id as a client
// that bypasses the client library: nothing signs it but what the test
// put in it. It returns the Outcome of what followed it.
func (f *fleet) publishAs(t *testing.T, buildID, id string, req events.Payload) client.Outcome {
	t.Helper()
	e := events.New(req)
	e.ID, e.BuildID, e.Source, e.Time = id, buildID, "/stevedore/client/attacker", time.Now()
	ctx := ctxFor(t)
	if err := bus.NewPublisher(f.Env.JS).Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
	out := client.Outcome{BuildID: buildID}
	seen := false
	if err := client.Follow(ctx, f.Env.JS, buildID, false, func(got events.Event) bool {
		seen = seen || got.ID == id
		if !seen {
			return true
		}
		out.Add(got)
		return !out.Done()
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// Issue 12, the join: a client publishes its own cache.export.requested
// on another build's subject naming that build's export session and store
// (both are in the events stream). The exporter must not write through the
// victim's session: a request naming a session acts only when that
// session's key signed it.
func TestSecurityExportNamesForeignSession(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	img := f.Push(t, "single", "join/app:1")
	build, _ := f.pull(t, img)

	// The victim serves its export destination for its build, as
	// client.ExportCache does while its export runs.
	dest := t.TempDir()
	l, err := ocilayout.Create(dest)
	if err != nil {
		t.Fatal(err)
	}
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	nc, _ := f.Env.Connect(t, "client")
	srv, err := session.Serve(t.Context(), nc, key.ID, session.Config{Protocols: []session.Protocol{fleettest.Stores(t, map[string]*ocilayout.Layout{client.CacheStore: l}), fleettest.Outputs(t, map[string]*ocilayout.Layout{client.CacheStore: l})}, Key: key, Builds: []string{build}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	req := events.CacheExportRequested{Target: "type=local,dest=/anything,tag=attacker", Build: build, Session: key.ID, Store: client.CacheStore}
	out := f.publishAs(t, build, build+"-attacker-export", req)
	if out.Exported != nil {
		t.Errorf("an unsigned export naming the victim's session wrote %d blobs into its store", out.Exported.Written)
	}
	if _, err := l.Resolve(t.Context(), "attacker"); err == nil {
		t.Error("the victim's layout has the attacker's tag")
	}
	if out.CacheFailed == nil || out.CacheFailed.Code != "invalid" || !strings.Contains(out.CacheFailed.Reason, "signed") {
		t.Errorf("unsigned export naming a session: %+v, want cache.export.failed, invalid, saying it is not signed", out.CacheFailed)
	}
}
