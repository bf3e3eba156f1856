package service

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/registry"
)

// Common holds the flags every service binary has.
type Common struct {
	// NATS is the server URL (-nats, STEVEDORE_NATS_URL).
	NATS string
	// HTTP is where /metrics and /healthz are served; empty for nowhere
	// (-http, STEVEDORE_HTTP_ADDR, default ":8080").
	HTTP string
	// Healthcheck asks a running replica's /healthz on HTTP and exits
	// (-healthcheck): a container's healthcheck command.
	Healthcheck bool
	// Provision creates streams, buckets and consumers at start
	// (-provision, STEVEDORE_PROVISION).
	Provision bool
	// Replicas is the replica count provisioning gives streams and
	// buckets (-replicas, STEVEDORE_REPLICAS); zero keeps what they have.
	Replicas int
	// EventsMaxBytes bounds the events stream when provisioning
	// (-events-max-bytes, STEVEDORE_EVENTS_MAX_BYTES): zero means
	// bus.DefaultEventsMaxBytes, negative no bound.
	EventsMaxBytes int64
	// DLQMaxBytes bounds the dead-letter and advisories streams when
	// provisioning (-dlq-max-bytes, STEVEDORE_DLQ_MAX_BYTES): zero means
	// bus.DefaultDLQMaxBytes, negative no bound.
	DLQMaxBytes int64
	// StopGrace is how long work in flight may go on after SIGTERM before
	// it is handed back to the other replicas (-stop-grace,
	// STEVEDORE_STOP_GRACE, default bus.DefaultStopGrace); a negative
	// value waits for it.
	StopGrace time.Duration
	// StartTimeout is how long a replica waits at start for a JetStream
	// that is loaded, electing or not up yet (-start-timeout,
	// STEVEDORE_START_TIMEOUT, default bus.DefaultStartTimeout).
	StartTimeout time.Duration

	fs                                     *flag.FlagSet
	instance, platform, downloads, dataDir string
	insecure, dockerConfig                 string
}

// RegisterCommon registers the common flags on fs.
func RegisterCommon(fs *flag.FlagSet) *Common {
	c := &Common{fs: fs}
	fs.StringVar(&c.NATS, "nats", Env("STEVEDORE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (STEVEDORE_NATS_URL)")
	fs.StringVar(&c.HTTP, "http", Env("STEVEDORE_HTTP_ADDR", ":8080"), "address of /metrics and /healthz; empty for none (STEVEDORE_HTTP_ADDR)")
	fs.BoolVar(&c.Healthcheck, "healthcheck", false, "ask the running replica's /healthz on -http and exit 0 when it is ready")
	fs.BoolVar(&c.Provision, "provision", Env("STEVEDORE_PROVISION", "true") == "true", "create streams, buckets and consumers at start (STEVEDORE_PROVISION)")
	replicas, _ := strconv.Atoi(Env("STEVEDORE_REPLICAS", "0"))
	fs.IntVar(&c.Replicas, "replicas", replicas, "replicas of streams and buckets when provisioning (3 on a JetStream cluster); 0 keeps what they have (STEVEDORE_REPLICAS)")
	fs.Int64Var(&c.EventsMaxBytes, "events-max-bytes", Int64Env("STEVEDORE_EVENTS_MAX_BYTES", 0),
		"when provisioning, the events stream's byte bound, oldest events dropped first; 0: 2 GiB, negative: none (STEVEDORE_EVENTS_MAX_BYTES)")
	fs.Int64Var(&c.DLQMaxBytes, "dlq-max-bytes", Int64Env("STEVEDORE_DLQ_MAX_BYTES", 0),
		"when provisioning, the dead-letter and advisories streams' byte bound; 0: 256 MiB, negative: none (STEVEDORE_DLQ_MAX_BYTES)")
	fs.DurationVar(&c.StopGrace, "stop-grace", DurationEnv("STEVEDORE_STOP_GRACE", bus.DefaultStopGrace),
		"after SIGTERM, how long work in flight may go on before it is handed back to the other replicas; negative: wait for it (STEVEDORE_STOP_GRACE)")
	fs.DurationVar(&c.StartTimeout, "start-timeout", DurationEnv("STEVEDORE_START_TIMEOUT", bus.DefaultStartTimeout),
		"at start, how long to wait for a JetStream that is loaded, electing a leader or not up yet before giving up (STEVEDORE_START_TIMEOUT)")
	return c
}

// Instance registers -instance (STEVEDORE_INSTANCE), the replica's name;
// usage says what empty means.
func (c *Common) Instance(usage string) {
	c.fs.StringVar(&c.instance, "instance", os.Getenv("STEVEDORE_INSTANCE"), usage+" (STEVEDORE_INSTANCE)")
}

// Platform registers -platform (STEVEDORE_PLATFORM), the platform of what
// names none (Settings.Platform); usage says of what.
func (c *Common) Platform(usage string) {
	c.fs.StringVar(&c.platform, "platform", os.Getenv("STEVEDORE_PLATFORM"), usage+" (STEVEDORE_PLATFORM)")
}

// Registry registers -insecure-registries (STEVEDORE_INSECURE_REGISTRIES)
// and -docker-config (DOCKER_CONFIG): Settings.Registry.
func (c *Common) Registry() {
	c.fs.StringVar(&c.insecure, "insecure-registries", os.Getenv("STEVEDORE_INSECURE_REGISTRIES"), "comma-separated registry hosts reached over plain HTTP (STEVEDORE_INSECURE_REGISTRIES)")
	c.fs.StringVar(&c.dockerConfig, "docker-config", os.Getenv("DOCKER_CONFIG"), "directory of config.json with registry credentials (DOCKER_CONFIG)")
}

// Downloads registers -http-downloads (STEVEDORE_HTTP_DOWNLOADS), the
// directory of http downloads (Settings.Downloads); usage says how the
// service uses it.
func (c *Common) Downloads(usage string) {
	c.fs.StringVar(&c.downloads, "http-downloads", os.Getenv("STEVEDORE_HTTP_DOWNLOADS"), usage+" (STEVEDORE_HTTP_DOWNLOADS)")
}

// DataDir registers -data-dir (STEVEDORE_DATA_DIR, default
// /var/lib/stevedore): Settings.DataDir; usage says what it holds.
func (c *Common) DataDir(usage string) {
	c.fs.StringVar(&c.dataDir, "data-dir", Env("STEVEDORE_DATA_DIR", "/var/lib/stevedore"), usage+" (STEVEDORE_DATA_DIR)")
}

// Settings are the fleet's settings these flags give, logging to log;
// Main adds the connection and where metrics and readiness go.
func (c *Common) Settings(log *slog.Logger) (Settings, error) {
	p, err := Platform(c.platform)
	if err != nil {
		return Settings{}, err
	}
	return Settings{
		Replica: Replica{Instance: c.instance, Provision: c.Provision, Replicas: c.Replicas, EventsMaxBytes: c.EventsMaxBytes,
			DLQMaxBytes: c.DLQMaxBytes, StopGrace: c.StopGrace, StartTimeout: c.StartTimeout, Logger: log},
		DataDir:   c.dataDir,
		Platform:  p,
		Registry:  registry.Config{DockerConfigDir: c.dockerConfig, Insecure: List(c.insecure)},
		Downloads: c.downloads,
	}, nil
}

// IntEnv returns the integer in environment variable key, or def when it
// is not set or does not parse: the default of a binary's flag.
func IntEnv(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return n
	}
	return def
}

// Int64Env returns the integer in environment variable key, or def when
// it is not set or does not parse: the default of a binary's flag.
func Int64Env(key string, def int64) int64 {
	if n, err := strconv.ParseInt(os.Getenv(key), 10, 64); err == nil {
		return n
	}
	return def
}

// DurationEnv returns the duration in environment variable key, or def
// when it is not set or does not parse: the default of a binary's flag.
func DurationEnv(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return d
	}
	return def
}

// Main is a service binary's life after its flags are parsed: with
// -healthcheck, the healthcheck's exit code; otherwise Serve with m, a
// fleet of one (StartFleet) on Serve's connection with the settings of
// the flags, logging JSON to stderr, and 1 (after logging why) when it
// fails.
func Main(c *Common, m Member) int {
	if c.Healthcheck {
		return Healthcheck(context.Background(), c.HTTP)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	s, err := c.Settings(log)
	if err == nil {
		err = Serve(c.NATS, m.Name, c.HTTP, func(ctx context.Context, js jetstream.JetStream, obs Observe) error {
			s.Dial = func(string) (*nats.Conn, jetstream.JetStream, error) { return nil, js, nil }
			s.Observe = obs
			f, err := StartFleet(ctx, s, m)
			if err != nil {
				return err
			}
			err = f.Wait(ctx)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		})
	}
	if err != nil {
		log.Error(m.Name+" stopped", "error", err.Error())
		return 1
	}
	return 0
}
