package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// serviceFlags are the flags of commands that run the services in-process.
type serviceFlags struct {
	platform     string
	insecure     []string
	dockerConfig string
	maxManifest  int64
	snapshotter  string
	// tagMaxAge and tagRevalidate are the puller's tag freshness; only
	// stevedore up sets them.
	tagMaxAge, tagRevalidate time.Duration
	// tagWatch is the puller's tag watch interval; only stevedore up
	// sets it.
	tagWatch time.Duration
	// dataDir is the embedded stack's data dir (--data-dir of the
	// commands that start it without --nats).
	dataDir string
}

func (f *serviceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.platform, "platform", "", "platform for sources that name none (default: this host's)")
	cmd.Flags().StringSliceVar(&f.insecure, "insecure-registry", nil, "registry host reached over plain HTTP (repeatable; loopback always is)")
	cmd.Flags().StringVar(&f.dockerConfig, "docker-config", "", "directory of config.json with registry credentials (default $DOCKER_CONFIG or ~/.docker)")
	cmd.Flags().Int64Var(&f.maxManifest, "max-manifest-bytes", registry.DefaultMaxManifestBytes, "largest manifest, index or config accepted")
	cmd.Flags().StringVar(&f.snapshotter, "snapshotter", string(snapshot.KindAuto), "snapshotter: auto, overlayfs or native")
}

func (f *serviceFlags) stackConfig(g *globals, b broker.Config) (stackConfig, error) {
	cfg := stackConfig{
		broker:        b,
		registry:      registry.Config{Insecure: f.insecure, DockerConfigDir: f.dockerConfig, MaxManifestBytes: f.maxManifest},
		log:           g.logger(),
		platform:      platforms.DefaultSpec(),
		snapshotter:   snapshot.Kind(f.snapshotter),
		tagMaxAge:     f.tagMaxAge,
		tagRevalidate: f.tagRevalidate,
		tagWatch:      f.tagWatch,
	}
	if f.platform != "" {
		p, err := service.Platform(f.platform)
		if err != nil {
			return cfg, fmt.Errorf("--platform: %w", err)
		}
		cfg.platform = p
	}
	return cfg, nil
}

// dataDirFlag registers --data-dir, the data dir of a stack this
// process runs, defaulting to defaultDataDir().
func dataDirFlag(cmd *cobra.Command, p *string, usage string) {
	cmd.Flags().StringVar(p, "data-dir", defaultDataDir(), usage)
}

func defaultDataDir() string { return dataDirOf(os.Getenv) }

// dataDirOf is the default data dir of a process with environment getenv.
func dataDirOf(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "stevedore")
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".local", "share", "stevedore")
	}
	return filepath.Join(os.TempDir(), "stevedore")
}

func newUp(g *globals) *cobra.Command {
	var (
		sf      serviceFlags
		dataDir string
		listen  string
		monitor int
		socket  snapshotsSocketFlags
		keepFor time.Duration
		streams bus.Topology
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run an embedded NATS server with JetStream and every service in this process",
		Long: `up runs the whole fleet in one process: an embedded nats-server with JetStream
(its store under --data-dir) plus the resolver, the puller, the snapshotter
(content and snapshots under --data-dir/snapshotter) and the exporter (remote
cache export and import). Clients and watchers connect to --listen; stop it
with Ctrl-C.

Only the user who started it is admitted: a password made at each start is
written to --data-dir/nats-credentials (the data dir is made 0700) and, for
this user's clients, under the default data dir; stevedore's commands given
--nats nats://host:port find it there without flags. Other programs connect
with the URL in nats-credentials.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, portStr, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			port, err := strconv.Atoi(portStr)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			// Only this user may reach the fleet: a password made now, in
			// the 0700 data dir and where this user's clients look.
			password, forget, err := upCredentials(dataDir, host, port)
			if err != nil {
				return err
			}
			defer forget()
			if keepFor < 0 {
				return errors.New("--keep-for: negative")
			}
			cfg, err := sf.stackConfig(g, broker.Config{DataDir: dataDir, Host: host, Port: port, HTTPPort: monitor, Password: password})
			if err != nil {
				return err
			}
			cfg.snapshotsSockets, cfg.snapshotsSocketGroup, cfg.remoteTimeout = socket.paths, socket.group, socket.timeout
			cfg.keepFor = keepFor
			cfg.streams = streams
			s, err := startStack(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer s.close()
			fmt.Fprintf(g.stdout, "stevedore is up: NATS %s, data in %s\n", s.srv.ClientURL(), dataDir)
			for _, p := range socket.paths {
				fmt.Fprintf(g.stdout, "snapshots API: %s (builder namespace %s)\n", p, snapshotter.SocketNamespace(p))
			}
			if u := s.srv.MonitorURL(); u != "" {
				fmt.Fprintf(g.stdout, "monitoring: %s\n", u)
			}
			return s.wait(cmd.Context())
		},
	}
	sf.register(cmd)
	cmd.Flags().DurationVar(&sf.tagMaxAge, "tag-max-age", 0, "how long the fleet's resolution of a tag answers without asking the registry (0: ask every time, as BuildKit)")
	cmd.Flags().DurationVar(&sf.tagWatch, "tag-watch-interval", time.Minute, "how often the fleet re-resolves the watched tags (stevedore watch-tags); 0: never")
	cmd.Flags().DurationVar(&sf.tagRevalidate, "tag-revalidate", 0, "how long past --tag-max-age a resolution still answers at once while the fleet revalidates it")
	dataDirFlag(cmd, &dataDir, "where JetStream keeps streams and buckets")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "client address of the embedded NATS server")
	cmd.Flags().IntVar(&monitor, "monitor-port", 0, "port of NATS's monitoring endpoints on the listen host (0: off)")
	socket.register(cmd)
	cmd.Flags().DurationVar(&keepFor, "keep-for", 0, "prune every hour the cache records older than this, and what only they referenced (0: never; \"stevedore prune --nats\" prunes at once)")
	cmd.Flags().Int64Var(&streams.EventsMaxBytes, "events-max-bytes", service.Int64Env("STEVEDORE_EVENTS_MAX_BYTES", 0),
		"the events stream's byte bound, oldest events dropped first; 0: 2 GiB, negative: none (STEVEDORE_EVENTS_MAX_BYTES)")
	cmd.Flags().Int64Var(&streams.DLQMaxBytes, "dlq-max-bytes", service.Int64Env("STEVEDORE_DLQ_MAX_BYTES", 0),
		"the dead-letter and advisories streams' byte bound; 0: 256 MiB, negative: none (STEVEDORE_DLQ_MAX_BYTES)")
	return cmd
}

// snapshotsSocketFlags are up's flags of the snapshots API.
type snapshotsSocketFlags struct {
	paths   []string
	group   string
	timeout time.Duration
}

func (f *snapshotsSocketFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.paths, "snapshots-socket", service.List(os.Getenv("STEVEDORE_SNAPSHOTS_SOCKET")),
		"unix socket serving containerd's snapshots API (remote snapshots) to one buildkitd or containerd of this node (repeatable: one per builder daemon, each its own namespace of snapshots); none: off ($STEVEDORE_SNAPSHOTS_SOCKET, comma-separated)")
	cmd.Flags().StringVar(&f.group, "snapshots-socket-group", os.Getenv("STEVEDORE_SNAPSHOTS_SOCKET_GROUP"),
		"group (name or id) allowed on the snapshots socket; empty: root only ($STEVEDORE_SNAPSHOTS_SOCKET_GROUP)")
	timeout := snapshotter.DefaultRemoteTimeout
	if d, err := time.ParseDuration(os.Getenv("STEVEDORE_REMOTE_SNAPSHOT_TIMEOUT")); err == nil {
		timeout = d
	}
	cmd.Flags().DurationVar(&f.timeout, "remote-snapshot-timeout", timeout,
		"how long a builder's Prepare waits for the fleet before it pulls the layer itself ($STEVEDORE_REMOTE_SNAPSHOT_TIMEOUT)")
}

// registerEmbedded registers the service flags on a command that starts
// the embedded stack only without --nats.
func (f *serviceFlags) registerEmbedded(cmd *cobra.Command) {
	dataDirFlag(cmd, &f.dataDir, "embedded stack only: where JetStream state and snapshots live")
	cmd.Flags().StringSliceVar(&f.insecure, "insecure-registry", nil, "embedded stack only: registry host reached over plain HTTP (repeatable; loopback always is)")
	cmd.Flags().StringVar(&f.dockerConfig, "docker-config", "", "embedded stack only: directory of config.json with registry credentials")
	cmd.Flags().Int64Var(&f.maxManifest, "max-manifest-bytes", registry.DefaultMaxManifestBytes, "embedded stack only: largest manifest, index or config accepted")
	cmd.Flags().StringVar(&f.snapshotter, "snapshotter", string(snapshot.KindAuto), "embedded stack only: snapshotter, auto, overlayfs or native")
}
