package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// serviceFlags are the flags of commands that run the services in-process.
type serviceFlags struct {
	platform     string
	insecure     []string
	dockerConfig string
	maxManifest  int64
	snapshotter  string
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
		broker:      b,
		registry:    registry.Config{Insecure: f.insecure, DockerConfigDir: f.dockerConfig, MaxManifestBytes: f.maxManifest},
		log:         g.logger(),
		platform:    platforms.DefaultSpec(),
		snapshotter: snapshot.Kind(f.snapshotter),
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

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "stevedore")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "stevedore")
	}
	return filepath.Join(home, ".local", "share", "stevedore")
}

func newUp(g *globals) *cobra.Command {
	var (
		sf      serviceFlags
		dataDir string
		listen  string
		monitor int
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
			cfg, err := sf.stackConfig(g, broker.Config{DataDir: dataDir, Host: host, Port: port, HTTPPort: monitor, Password: password})
			if err != nil {
				return err
			}
			cfg.streams = streams
			s, err := startStack(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer s.close()
			fmt.Fprintf(g.stdout, "stevedore is up: NATS %s, data in %s\n", s.srv.ClientURL(), dataDir)
			if u := s.srv.MonitorURL(); u != "" {
				fmt.Fprintf(g.stdout, "monitoring: %s\n", u)
			}
			return s.wait(cmd.Context())
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "where JetStream keeps streams and buckets")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "client address of the embedded NATS server")
	cmd.Flags().IntVar(&monitor, "monitor-port", 0, "port of NATS's monitoring endpoints on the listen host (0: off)")
	cmd.Flags().Int64Var(&streams.EventsMaxBytes, "events-max-bytes", service.Int64Env("STEVEDORE_EVENTS_MAX_BYTES", 0),
		"the events stream's byte bound, oldest events dropped first; 0: 2 GiB, negative: none (STEVEDORE_EVENTS_MAX_BYTES)")
	cmd.Flags().Int64Var(&streams.DLQMaxBytes, "dlq-max-bytes", service.Int64Env("STEVEDORE_DLQ_MAX_BYTES", 0),
		"the dead-letter and advisories streams' byte bound; 0: 256 MiB, negative: none (STEVEDORE_DLQ_MAX_BYTES)")
	return cmd
}

// registerEmbedded registers the service flags on a command that starts
// the embedded stack only without --nats.
func (f *serviceFlags) registerEmbedded(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.insecure, "insecure-registry", nil, "embedded stack only: registry host reached over plain HTTP (repeatable; loopback always is)")
	cmd.Flags().StringVar(&f.dockerConfig, "docker-config", "", "embedded stack only: directory of config.json with registry credentials")
	cmd.Flags().Int64Var(&f.maxManifest, "max-manifest-bytes", registry.DefaultMaxManifestBytes, "embedded stack only: largest manifest, index or config accepted")
	cmd.Flags().StringVar(&f.snapshotter, "snapshotter", string(snapshot.KindAuto), "embedded stack only: snapshotter, auto, overlayfs or native")
}
