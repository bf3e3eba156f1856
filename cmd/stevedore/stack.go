package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/services/exporter"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/resolver"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// stackConfig configures the in-process fleet.
type stackConfig struct {
	broker      broker.Config
	platform    ocispec.Platform
	registry    registry.Config
	snapshotter snapshot.Kind
	log         *slog.Logger
	// snapshotsSocket, snapshotsSocketGroup and remoteTimeout are the
	// snapshotter's (snapshotter.Config); empty: no snapshots socket.
	snapshotsSockets     []string
	snapshotsSocketGroup string
	remoteTimeout        time.Duration
	// tagMaxAge and tagRevalidate are the puller's tag freshness
	// (puller.Config.TagMaxAge, TagRevalidate).
	tagMaxAge, tagRevalidate time.Duration
	// tagWatch is puller.Config.TagWatchInterval.
	tagWatch time.Duration
	// keepFor makes the snapshotter prune records older than it; zero
	// never does.
	keepFor time.Duration
	// streams are the byte bounds of the streams provisioned
	// (EventsMaxBytes, DLQMaxBytes); zero for the defaults.
	streams bus.Topology
}

// stack is an embedded NATS server with every service running against it,
// each on its own in-process connection, exactly as the fleet runs them.
type stack struct {
	srv   *broker.Server
	admin *nats.Conn
	fleet *service.Fleet
	snap  *snapshotter.Service
}

// startStack starts the server, provisions it and starts the services.
func startStack(ctx context.Context, cfg stackConfig) (*stack, error) {
	srv, err := broker.Start(cfg.broker)
	if err != nil {
		return nil, err
	}
	s := &stack{srv: srv}
	var js jetstream.JetStream
	if s.admin, js, err = s.connect("stevedore-admin"); err != nil {
		s.close()
		return nil, err
	}
	if err := bus.Provision(ctx, js, bus.Topology{EventsMaxBytes: cfg.streams.EventsMaxBytes, DLQMaxBytes: cfg.streams.DLQMaxBytes}); err != nil {
		s.close()
		return nil, err
	}
	if r, err := recoverStack(ctx, js); err != nil {
		s.close()
		return nil, err
	} else if r.Leases+r.Redelivered > 0 {
		cfg.log.Info("recovered from a process that was killed", "leases", r.Leases, "redelivered", r.Redelivered)
	}
	// One replica of each service, named "embedded", the topology
	// provisioned above. The puller keeps what it downloads of http
	// sources where the snapshotter, in this process, reads it: one
	// download, not two.
	settings := service.Settings{
		Dial:      s.connect,
		Replica:   service.Replica{Instance: "embedded", Logger: cfg.log},
		DataDir:   filepath.Join(cfg.broker.DataDir, "snapshotter"),
		Platform:  cfg.platform,
		Registry:  cfg.registry,
		Downloads: filepath.Join(cfg.broker.DataDir, "http-downloads"),
	}
	snap := snapshotter.Member(snapshotter.Config{Snapshotter: cfg.snapshotter, Node: "embedded", KeepFor: cfg.keepFor,
		SnapshotsSockets: cfg.snapshotsSockets, SnapshotsSocketGroup: cfg.snapshotsSocketGroup, RemoteTimeout: cfg.remoteTimeout})
	s.fleet, err = service.StartFleet(ctx, settings,
		resolver.Def.Member(resolver.Config{}),
		puller.Def.Member(puller.Config{TagMaxAge: cfg.tagMaxAge, TagRevalidate: cfg.tagRevalidate, TagWatchInterval: cfg.tagWatch}),
		snap,
		exporter.Def.Member(exporter.Config{}))
	if err != nil {
		s.close()
		return nil, err
	}
	s.snap = s.fleet.Runner(snap.Name).(*snapshotter.Service)
	return s, nil
}

// connect opens an in-process connection.
func (s *stack) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := s.srv.Connect(name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// wait blocks until a service stops (with its error) or ctx is done.
func (s *stack) wait(ctx context.Context) error { return s.fleet.Wait(ctx) }

// close stops the services, then the server.
func (s *stack) close() {
	if s.fleet != nil {
		_ = s.fleet.Close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	s.srv.Shutdown()
}
