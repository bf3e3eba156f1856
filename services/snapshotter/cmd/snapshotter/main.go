// Command snapshotter runs one replica of Stevedore's snapshotter service
// against a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"os"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

func main() {
	flags := service.RegisterCommon(flag.CommandLine)
	flags.DataDir("content store and snapshots")
	flags.Registry()
	flags.Downloads("directory where the pullers keep their http downloads, shared with them at the same path: a file found there (and matching the puller's digest) is not downloaded again; empty: every http file is downloaded")
	kind := flag.String("snapshotter", service.Env("STEVEDORE_SNAPSHOTTER", string(snapshot.KindAuto)), "auto, overlayfs or native (STEVEDORE_SNAPSHOTTER)")
	node := flag.String("node", os.Getenv("STEVEDORE_NODE"), "node name other services see; default the host name (STEVEDORE_NODE)")
	leaseTTL := flag.Duration("lease-ttl", service.DurationEnv("STEVEDORE_LEASE_TTL", 30*time.Second), "how long a snapshot lease outlives a dead holder (STEVEDORE_LEASE_TTL)")
	window := flag.Int("window", service.IntEnv("STEVEDORE_WINDOW", snapshot.DefaultWindow), "layer downloads in flight per snapshot (STEVEDORE_WINDOW)")
	keepFor := flag.Duration("keep-for", service.DurationEnv("STEVEDORE_KEEP_FOR", 0), "prune hourly the cache records of this node older than this and what they alone kept; 0: never (STEVEDORE_KEEP_FOR)")
	rootfsListen := flag.String("rootfs-listen", os.Getenv("STEVEDORE_ROOTFS_LISTEN"), "address of the endpoint streaming snapshots' root filesystems to clients; default 127.0.0.1:0 (STEVEDORE_ROOTFS_LISTEN)")
	rootfsAdvertise := flag.String("rootfs-advertise", os.Getenv("STEVEDORE_ROOTFS_ADVERTISE"), "base URL clients reach that endpoint at; default http:// and the address listened on (STEVEDORE_ROOTFS_ADVERTISE)")
	def := snapshot.DefaultLimits()
	layerBytes := flag.Int64("max-layer-bytes", service.Int64Env("STEVEDORE_MAX_LAYER_BYTES", def.LayerBytes), "most bytes a layer's files may declare, uncompressed; negative: no limit (STEVEDORE_MAX_LAYER_BYTES)")
	layerEntries := flag.Int64("max-layer-entries", service.Int64Env("STEVEDORE_MAX_LAYER_ENTRIES", def.LayerEntries), "most entries a layer may hold; negative: no limit (STEVEDORE_MAX_LAYER_ENTRIES)")
	snapBytes := flag.Int64("max-snapshot-bytes", service.Int64Env("STEVEDORE_MAX_SNAPSHOT_BYTES", def.SnapshotBytes), "most bytes a snapshot's layers may declare; negative: no limit (STEVEDORE_MAX_SNAPSHOT_BYTES)")
	snapEntries := flag.Int64("max-snapshot-entries", service.Int64Env("STEVEDORE_MAX_SNAPSHOT_ENTRIES", def.SnapshotEntries), "most entries a snapshot's layers may hold; negative: no limit (STEVEDORE_MAX_SNAPSHOT_ENTRIES)")
	minFree := flag.Int64("min-free-bytes", service.Int64Env("STEVEDORE_MIN_FREE_BYTES", def.MinFreeBytes), "free space an unpack leaves in the data dir; negative: no floor (STEVEDORE_MIN_FREE_BYTES)")
	socket := flag.String("snapshots-socket", os.Getenv("STEVEDORE_SNAPSHOTS_SOCKET"), "unix sockets (comma-separated, one per builder daemon) serving containerd's snapshots API to this node's builders; empty: off (STEVEDORE_SNAPSHOTS_SOCKET)")
	socketGroup := flag.String("snapshots-socket-group", os.Getenv("STEVEDORE_SNAPSHOTS_SOCKET_GROUP"), "group (name or id) allowed on the snapshots socket; empty: root only (STEVEDORE_SNAPSHOTS_SOCKET_GROUP)")
	remoteTimeout := flag.Duration("remote-snapshot-timeout", service.DurationEnv("STEVEDORE_REMOTE_SNAPSHOT_TIMEOUT", snapshotter.DefaultRemoteTimeout), "how long a builder's Prepare waits for the fleet before it pulls the layer itself (STEVEDORE_REMOTE_SNAPSHOT_TIMEOUT)")
	clientCheck := flag.Duration("client-check", service.DurationEnv("STEVEDORE_CLIENT_CHECK", 5*time.Second), "while making a snapshot for a build with a client session, how often to check that the client is still there (the work stops when it is gone); negative: never (STEVEDORE_CLIENT_CHECK)")
	flag.Parse()
	os.Exit(service.Main(flags, snapshotter.Member(snapshotter.Config{Snapshotter: snapshot.Kind(*kind), Node: *node,
		LeaseTTL: *leaseTTL, Window: *window, KeepFor: *keepFor, ClientCheck: *clientCheck,
		SnapshotsSockets: service.List(*socket), SnapshotsSocketGroup: *socketGroup, RemoteTimeout: *remoteTimeout,
		RootfsListen: *rootfsListen, RootfsAdvertise: *rootfsAdvertise,
		Limits: snapshot.Limits{LayerBytes: *layerBytes, LayerEntries: *layerEntries, SnapshotBytes: *snapBytes, SnapshotEntries: *snapEntries, MinFreeBytes: *minFree}})))
}
