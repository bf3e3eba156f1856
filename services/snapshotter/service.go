// Package snapshotter is Stevedore's snapshot service. It consumes
// snapshot.requested (emitted by the puller when every key of a source
// missed and the client wants its content), makes the snapshot of the
// layers in a containerd snapshotter on this node (pkg/snapshot: windowed,
// pipelined, verified, deduplicated by chainID), records it in the cache
// index under every key of the request, and answers snapshot.ready, or
// snapshot.failed. Progress events carry BuildKit's labels.
//
// The data dir holds content/ (the compressed blobs, kept for export) and
// snapshots/<kind>/ (containerd's snapshotter); one process owns it at a
// time. A snapshot is made once for the whole fleet: the node that takes a
// chainID's lease makes it, every other request for it follows, and takes
// over if that node dies.
package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/nats-io/nats.go/jetstream"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/blobs"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/rootfs"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// Config configures the snapshotter. In a fleet (Member) it takes the
// fleet's service.Settings where it leaves them zero: the Replica's,
// DataDir, Registry and Downloads.
type Config struct {
	// DataDir holds the content store and the snapshots. Required.
	DataDir string
	// Snapshotter is the snapshotter kind. Zero means snapshot.KindAuto
	// (overlayfs where possible, native otherwise).
	Snapshotter snapshot.Kind
	// Node names this node in cache records and snapshot.ready; other
	// services and clients use it to find the snapshot. Empty means the
	// host name.
	Node string
	// Replica is how the replica runs. An empty Instance means Node; zero
	// Concurrency means 2; a zero Consumer means bus.SnapshotterConsumer().
	service.Replica
	// Window bounds the layer downloads in flight per snapshot. Zero means
	// snapshot.DefaultWindow.
	Window int
	// Registry configures registry access.
	Registry registry.Config
	// LeaseTTL is how long a snapshot lease outlives a dead holder. Zero
	// means 30s.
	LeaseTTL time.Duration
	// KeepFor, when positive, makes the service prune every PruneEvery: the
	// cache records of this node older than KeepFor are dropped, and the
	// snapshots and blobs no record references are removed.
	KeepFor time.Duration
	// PruneEvery is the pruning period. Zero means an hour.
	PruneEvery time.Duration
	// SnapshotsSocket, when set, is a unix socket on which this replica
	// serves containerd's snapshots API over its own store, for a builder
	// daemon of its node (buildkitd's proxy snapshotter, containerd's
	// proxy_plugins): see socket.go and remote.go. Empty means none.
	// Each socket has its own namespace of builder snapshots, named after
	// the socket file without its extension (SocketNamespace): give each
	// builder daemon its own socket, since containerd's metadata gc
	// removes the snapshots it does not know.
	SnapshotsSocket string
	// SnapshotsSockets are more such sockets, one per further builder
	// daemon. Nil means none.
	SnapshotsSockets []string
	// SnapshotsSocketGroup, when set, is the group (name or id) whose
	// members may use the socket (mode 0660). Empty means root only (0600).
	SnapshotsSocketGroup string
	// RemoteTimeout bounds how long a builder's Prepare of a remote
	// snapshot waits for the fleet before the builder is told to pull the
	// layer itself. Zero means DefaultRemoteTimeout.
	RemoteTimeout time.Duration
	// RootfsListen is the address of the HTTP endpoint that streams the
	// root filesystem of this node's snapshots to clients (pkg/rootfs:
	// `stevedore pull --nats --output`). Empty means "127.0.0.1:0":
	// clients on this machine, any free port.
	RootfsListen string
	// RootfsAdvertise is the base URL clients reach that endpoint at
	// ("http://node-1:7070"). Empty means http:// and the address listened
	// on.
	RootfsAdvertise string
	// Limits bound what a snapshot's layers may expand to: a layer's and a
	// snapshot's declared bytes and entries, and the data dir's free-space
	// floor. Reaching one fails the snapshot at once (snapshot.failed,
	// code invalid, no retries) and keeps nothing of the layer. A zero
	// field means snapshot.DefaultLimits()'s; a negative one turns that
	// limit off.
	Limits snapshot.Limits
	// ClientCheck is how often, while a snapshot is made for a build that
	// names a client session, the snapshotter checks that the session
	// still answers; when it is gone (the client cancelled or went away)
	// the work stops and the build fails for good. Zero means 5 seconds;
	// negative never checks.
	ClientCheck time.Duration
	// Downloads is the directory where the pullers keep what they download
	// of http sources (puller.Config.Downloads), as this replica sees it:
	// the same directory in one process, a volume shared with the pullers
	// mounted at the same path otherwise. A file snapshot whose location
	// names it reads the file there, verified against the digest the
	// puller computed, and downloads it from its URL when it is not there,
	// incomplete or altered. Empty means no such directory: every http
	// file is downloaded from its URL, and no layout directory an event
	// names is opened for one.
	Downloads string
}

// limits is c.Limits with the defaults in, and the limits turned off at 0.
func (c Config) limits() snapshot.Limits {
	def := snapshot.DefaultLimits()
	pick := func(v, d int64) int64 {
		switch {
		case v == 0:
			return d
		case v < 0:
			return 0
		}
		return v
	}
	return snapshot.Limits{
		LayerBytes:      pick(c.Limits.LayerBytes, def.LayerBytes),
		LayerEntries:    pick(c.Limits.LayerEntries, def.LayerEntries),
		SnapshotBytes:   pick(c.Limits.SnapshotBytes, def.SnapshotBytes),
		SnapshotEntries: pick(c.Limits.SnapshotEntries, def.SnapshotEntries),
		MinFreeBytes:    pick(c.Limits.MinFreeBytes, def.MinFreeBytes),
	}
}

func (c *Config) setDefaults() {
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	c.Default(service.Replica{Instance: c.Node, Concurrency: 2, Consumer: bus.SnapshotterConsumer()})
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.PruneEvery == 0 {
		c.PruneEvery = time.Hour
	}
	if c.RemoteTimeout == 0 {
		c.RemoteTimeout = DefaultRemoteTimeout
	}
	if c.ClientCheck == 0 {
		c.ClientCheck = 5 * time.Second
	}
}

// Validate reports a configuration the service cannot run with.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("no data dir")
	}
	if c.SnapshotsSocketGroup != "" && len(c.sockets()) == 0 {
		return errors.New("a snapshots socket group without a snapshots socket")
	}
	seen := map[string]string{}
	for _, path := range c.sockets() {
		ns := SocketNamespace(path)
		if other, ok := seen[ns]; ok {
			return fmt.Errorf("snapshots sockets %s and %s have one namespace, %q: name their files apart", other, path, ns)
		}
		seen[ns] = path
	}
	if c.Window < 0 || c.LeaseTTL < 0 || c.KeepFor < 0 || c.RemoteTimeout < 0 {
		return errors.New("negative limits")
	}
	return c.Replica.Validate()
}

// def is the snapshotter as the service shell assembles it; each
// replica's setup is its own (New).
var def = service.Def[Config, *Config]{Component: events.ComponentSnapshotter, Defaults: (*Config).setDefaults}

// Service is one snapshotter replica: the shell's replica (Run), with the
// node's snapshot store it holds from New to Close.
type Service struct {
	*service.Service[Config]
	js    jetstream.JetStream
	cfg   Config
	store *snapshot.Store
	busy  sync.RWMutex
}

// New opens the data dir (removing what a killed process left there) and
// returns a replica that uses js. Close releases the data dir.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Service, error) {
	s := &Service{js: js}
	d := def
	d.Setup = s.setup
	shell, err := d.New(js, cfg)
	if err != nil {
		return nil, err
	}
	s.Service, s.cfg = shell, shell.Config()
	if s.store, err = snapshot.Open(ctx, s.cfg.DataDir, s.cfg.Snapshotter); err != nil {
		return nil, err
	}
	return s, nil
}

// Store is the node's snapshot store.
func (s *Service) Store() *snapshot.Store { return s.store }

// Close releases the data dir.
func (s *Service) Close() error { return s.store.Close() }

// Member is the snapshotter in a fleet (service.StartFleet) with cfg,
// which takes the fleet's settings where it leaves fields zero; its
// replica is New's.
func Member(cfg Config) service.Member { return service.NewMember(def, cfg, New) }

// setup opens what the handler needs (the topology is provisioned by
// then), starts the rootfs endpoint, the pruning and the snapshots
// sockets, and registers the handler.
func (s *Service) setup(ctx context.Context, setup *service.Setup, _ Config) error {
	js := setup.JetStream // what the replica sets up waits out a busy or electing cluster
	reg, err := registry.New(s.cfg.Registry)
	if err != nil {
		return err
	}
	flight, err := setup.Flight(ctx, events.BucketSnapshots, s.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	index, err := cacheindex.Open(ctx, js)
	if err != nil {
		return err
	}
	gitCache, err := gitremote.NewCache(filepath.Join(s.cfg.DataDir, gitCacheDir))
	if err != nil {
		return err
	}
	// Blobs of oci-layout sources, local directories and the secrets of
	// git and http credentials come from the client's session, over this
	// service's own connection.
	sessions, err := session.NewClient(s.js.Conn())
	if err != nil {
		return err
	}
	h, err := NewHandler(HandlerConfig{Node: s.cfg.Node, Store: s.store, Reader: blobs.NewReader(reg).WithSessions(store.NewClient(sessions)), Flight: flight, Index: index,
		Window: s.cfg.Window, Limits: s.cfg.limits(), Busy: &s.busy, Git: gitCache, Local: dirsync.NewClient(sessions), Secrets: secret.NewClient(sessions),
		Clients: sessions, ClientCheck: s.cfg.ClientCheck, Downloads: s.cfg.Downloads, Metrics: s.cfg.Observe.Metrics})
	if err != nil {
		return err
	}
	if s.cfg.KeepFor > 0 {
		go s.pruneLoop(ctx, index)
	}
	rfs, err := rootfs.NewServer(rootfs.ServerConfig{Node: s.cfg.Node, Listen: s.cfg.RootfsListen, Advertise: s.cfg.RootfsAdvertise,
		Allow: s.allowRootfs, Logger: s.cfg.Logger}, rootfs.SourceFunc(s.writeRootfs))
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	rfsCtx, stopRootfs := context.WithCancelCause(ctx)
	rfsDone := make(chan error, 1)
	go func() { rfsDone <- rfs.Serve(rfsCtx, s.js.Conn()) }()
	setup.Defer(func() {
		stopRootfs(errors.New("snapshotter stopped"))
		if err := <-rfsDone; err != nil {
			s.cfg.Logger.Warn("rootfs endpoint", "error", err.Error())
		}
	})
	stopPrune, err := s.servePrune(ctx, index)
	if err != nil {
		return err
	}
	setup.Defer(stopPrune)
	log := setup.Log
	chains := s.chains(h)
	for _, path := range s.cfg.sockets() {
		ns := SocketNamespace(path)
		srv, err := ListenSnapshots(ctx, s.builders(h, chains, ns), path, WithSocketGroup(s.cfg.SnapshotsSocketGroup))
		if err != nil {
			return fmt.Errorf("snapshotter: %w", err)
		}
		setup.Defer(func() { _ = srv.Close() })
		log.Info("serving containerd's snapshots API", "socket", path, "namespace", ns)
	}
	log.Info("snapshotter ready", "rootfs", rfs.URL(), "data_dir", s.cfg.DataDir, "snapshotter", string(s.store.Kind()), "node", s.cfg.Node)
	setup.Worker.Handle(events.TypeSnapshotRequested, bus.Typed(h.Snapshot))
	return nil
}

func (s *Service) pruneLoop(ctx context.Context, index *cacheindex.Index) {
	t := time.NewTicker(s.cfg.PruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if res, err := s.Prune(ctx, index, s.cfg.KeepFor); err != nil {
				s.cfg.Logger.Warn("prune failed", "error", err.Error())
			} else if res.Snapshots+res.Blobs > 0 {
				s.cfg.Logger.Info("pruned", "snapshots", res.Snapshots, "blobs", res.Blobs, "bytes", res.Bytes)
			}
		}
	}
}

// Prune drops this node's cache records older than keepFor (all of them
// when keepFor is zero), then removes the snapshots and blobs that no
// remaining record references, and forgets this node's snapshots that are
// gone so that no request follows them.
func (s *Service) Prune(ctx context.Context, index *cacheindex.Index, keepFor time.Duration) (snapshot.PruneResult, error) {
	entries, err := index.List(ctx)
	if err != nil {
		return snapshot.PruneResult{}, err
	}
	cutoff := time.Now().Add(-keepFor)
	var keep []string
	for _, e := range entries {
		if e.Record.Node != s.cfg.Node {
			continue
		}
		if e.Record.CreatedAt.Before(cutoff) {
			if err := index.Delete(ctx, e.Digest); err != nil {
				return snapshot.PruneResult{}, err
			}
			continue
		}
		if e.Record.ChainID != "" {
			keep = append(keep, e.Record.ChainID.String())
		}
		if e.Record.SnapshotKey != "" {
			keep = append(keep, e.Record.SnapshotKey)
		}
	}
	s.busy.Lock()
	defer s.busy.Unlock()
	kv, err := s.js.KeyValue(ctx, events.BucketSnapshots)
	if err != nil {
		return snapshot.PruneResult{}, err
	}
	res, err := s.store.Prune(ctx, keep)
	if err != nil {
		return res, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return res, err
	}
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		hex, ok := strings.CutPrefix(key, "snapshot.")
		var r snapshotRecord
		if ok && json.Unmarshal(e.Value(), &r) == nil && r.Node == s.cfg.Node &&
			!s.store.Has(ctx, digest.NewDigestFromEncoded(digest.SHA256, hex)) {
			_ = kv.Delete(ctx, key)
		}
	}
	return res, nil
}

// newHTTPClient is the client of http sources: the environment's proxy,
// a bound on the wait for response headers, no bound on a body that keeps
// coming.
func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t}
}

// DefaultRemoteTimeout is how long a builder's Prepare of a remote
// snapshot waits for the fleet by default.
const DefaultRemoteTimeout = 5 * time.Minute

// sockets are the snapshots sockets to serve.
func (c Config) sockets() []string {
	var out []string
	if c.SnapshotsSocket != "" {
		out = append(out, c.SnapshotsSocket)
	}
	return append(out, c.SnapshotsSockets...)
}

// SocketNamespace is the namespace of builder snapshots a snapshots
// socket serves: its file name without the extension
// ("/run/stevedore/buildkitd.sock" → "buildkitd").
func SocketNamespace(path string) string {
	base := filepath.Base(path)
	if ns := strings.TrimSuffix(base, filepath.Ext(base)); ns != "" {
		return ns
	}
	return base
}

// chains makes the image chains of remote snapshots, with builds this
// replica runs; every socket shares it.
func (s *Service) chains(h *Handler) *chains {
	maker := &remoteBuilds{js: s.js, h: h, instance: s.cfg.Instance, log: s.cfg.Logger}
	return &chains{maker: maker, has: h.has, timeout: s.cfg.RemoteTimeout, made: map[string]chain{}}
}

// builders is the snapshotter a snapshots socket serves: the store's view
// for the builder namespace ns, with remote snapshots.
func (s *Service) builders(h *Handler, c *chains, ns string) snapshots.Snapshotter {
	return &remoteSnapshotter{
		Builders: s.store.Builders(ns),
		chains:   c,
		timeout:  s.cfg.RemoteTimeout,
		log:      s.cfg.Logger,
		prepares: h.remotePrepares,
		busy:     h.busy,
	}
}
