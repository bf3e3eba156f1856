// Command resolver runs one replica of Stevedore's resolver service against
// a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/platforms"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

func main() {
	natsURL := flag.String("nats", env("STEVEDORE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (STEVEDORE_NATS_URL)")
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default the host name (STEVEDORE_INSTANCE)")
	platform := flag.String("platform", os.Getenv("STEVEDORE_PLATFORM"), "platform for requests that name none; default this host's (STEVEDORE_PLATFORM)")
	provision := flag.Bool("provision", env("STEVEDORE_PROVISION", "true") == "true", "create streams, buckets and consumers at start (STEVEDORE_PROVISION)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*natsURL, *instance, *platform, *provision, log); err != nil {
		log.Error("resolver stopped", "error", err.Error())
		os.Exit(1)
	}
}

func run(natsURL, instance, platform string, provision bool, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := resolver.Config{Instance: instance, Provision: provision, Logger: log}
	if platform != "" {
		p, err := platforms.Parse(platform)
		if err != nil {
			return fmt.Errorf("-platform: %w", err)
		}
		cfg.Platform = p
	}
	nc, js, err := bus.Connect(natsURL, "stevedore-resolver")
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := resolver.New(js, cfg)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
