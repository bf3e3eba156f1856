// Command resolver runs one replica of Stevedore's resolver service against
// a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

func main() {
	natsURL := flag.String("nats", service.Env("STEVEDORE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (STEVEDORE_NATS_URL)")
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default the host name (STEVEDORE_INSTANCE)")
	platform := flag.String("platform", os.Getenv("STEVEDORE_PLATFORM"), "platform for requests that name none; default this host's (STEVEDORE_PLATFORM)")
	provision := flag.Bool("provision", service.Env("STEVEDORE_PROVISION", "true") == "true", "create streams, buckets and consumers at start (STEVEDORE_PROVISION)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg := resolver.Config{Instance: *instance, Provision: *provision, Logger: log}
	err := service.Serve(*natsURL, "stevedore-resolver", func(ctx context.Context, js jetstream.JetStream) error {
		var err error
		if cfg.Platform, err = service.Platform(*platform); err != nil {
			return err
		}
		svc, err := resolver.New(js, cfg)
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
	if err != nil {
		log.Error("resolver stopped", "error", err.Error())
		os.Exit(1)
	}
}
