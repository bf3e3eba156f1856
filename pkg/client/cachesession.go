package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/output"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// CacheStore is the store id under which ExportCache and ImportCache
// serve a local cache's layout in their session.
const CacheStore = "cache"

// serveCache serves cfg in a keyed session of its own, for as long as a
// cache request runs: the client opened (or made) the local cache's
// directory with its own rights, and the fleet reaches it only through
// the session, for build buildID only.
func serveCache(ctx context.Context, js jetstream.JetStream, buildID string, cfg session.Config) (*session.Server, error) {
	key, err := session.NewKey()
	if err != nil {
		return nil, err
	}
	cfg.Key = key
	cfg.Builds = []string{buildID}
	cfg.Logger = slog.New(slog.DiscardHandler)
	return session.Serve(ctx, js.Conn(), key.ID, cfg)
}

// exportSession serves req's local destination, when it has one and names
// no session, and sets req's session; stop ends it (a no-op otherwise),
// and, when the export failed, removes the empty layout it made, so a
// failed export leaves nothing behind.
func exportSession(ctx context.Context, js jetstream.JetStream, buildID string, req *events.CacheExportRequested) (stop func(failed bool), err error) {
	t, err := cachefmt.ParseExportTarget(req.Target)
	if err != nil || t.Type != cachefmt.TypeLocal || req.Session != "" {
		return func(bool) {}, nil //nolint:nilerr // the fleet reports a bad target
	}
	_, statErr := os.Lstat(t.Dest)
	made := errors.Is(statErr, fs.ErrNotExist)
	l, err := ocilayout.Create(t.Dest)
	if err != nil {
		return nil, fmt.Errorf("local cache exporter: %w", err)
	}
	// The layout is written through the session (output) and read back
	// through it (its store).
	outputs, err := output.NewServer(map[string]*ocilayout.Layout{CacheStore: l})
	if err != nil {
		return nil, err
	}
	stores, err := store.NewServer(map[string]*ocilayout.Layout{CacheStore: l})
	if err != nil {
		return nil, err
	}
	srv, err := serveCache(ctx, js, buildID, session.Config{Protocols: []session.Protocol{stores, outputs}})
	if err != nil {
		return nil, err
	}
	req.Session, req.Store = srv.ID(), CacheStore
	return func(failed bool) {
		_ = srv.Stop()
		if failed && made {
			// Only what Create made, and only when empty: os.Remove
			// leaves a non-empty directory alone.
			for _, p := range []string{filepath.Join(t.Dest, ocilayout.BlobsDir, "sha256"), filepath.Join(t.Dest, ocilayout.BlobsDir), filepath.Join(t.Dest, ocilayout.LayoutFile), t.Dest} {
				_ = os.Remove(p)
			}
		}
	}, nil
}

// ServeImport serves req's local source, when it has one and names no
// session, in a keyed session of its own that serves build buildID only, and sets req's Session and
// Store to it; stop ends the session (a no-op when nothing is served).
// ImportCache calls it for the import's duration; a client whose later
// pulls should read the cache's blobs (a pull with --import-cache) calls
// it first and stops the session when they are done. The layout is opened
// with the client's rights: one it cannot read fails here; a missing one
// is served as no store, which the fleet reports with BuildKit's warning.
func ServeImport(ctx context.Context, js jetstream.JetStream, buildID string, req *events.CacheImportRequested) (stop func(), err error) {
	s, err := cachefmt.ParseImportSource(req.Source)
	if err != nil || s.Type != cachefmt.TypeLocal || req.Session != "" {
		return func() {}, nil //nolint:nilerr // the fleet reports a bad source
	}
	layouts := map[string]*ocilayout.Layout{}
	l, err := ocilayout.Open(s.Src)
	switch {
	case err == nil:
		layouts[CacheStore] = l
	case !errors.Is(err, ocilayout.ErrNotFound):
		return nil, fmt.Errorf("local cache importer: %w", err)
	}
	// A missing layout is served as no store: the fleet finds none and
	// warns, as BuildKit does of a missing local cache.
	stores, err := store.NewServer(layouts)
	if err != nil {
		return nil, err
	}
	srv, err := serveCache(ctx, js, buildID, session.Config{Protocols: []session.Protocol{stores}})
	if err != nil {
		return nil, err
	}
	req.Session, req.Store = srv.ID(), CacheStore
	return func() { _ = srv.Stop() }, nil
}
