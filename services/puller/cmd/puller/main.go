// Command puller runs one replica of Stevedore's puller service against a
// NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/puller"
)

func main() {
	natsURL := flag.String("nats", service.Env("STEVEDORE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (STEVEDORE_NATS_URL)")
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default host name and pid (STEVEDORE_INSTANCE)")
	platform := flag.String("platform", os.Getenv("STEVEDORE_PLATFORM"), "platform for sources that name none (STEVEDORE_PLATFORM)")
	insecure := flag.String("insecure-registries", os.Getenv("STEVEDORE_INSECURE_REGISTRIES"), "comma-separated registry hosts reached over plain HTTP (STEVEDORE_INSECURE_REGISTRIES)")
	dockerConfig := flag.String("docker-config", os.Getenv("DOCKER_CONFIG"), "directory of config.json with registry credentials (DOCKER_CONFIG)")
	provision := flag.Bool("provision", service.Env("STEVEDORE_PROVISION", "true") == "true", "create streams, buckets and consumers at start (STEVEDORE_PROVISION)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg := puller.Config{Instance: *instance, Provision: *provision, Logger: log,
		Registry: registry.Config{DockerConfigDir: *dockerConfig}}
	if *insecure != "" {
		cfg.Registry.Insecure = strings.Split(*insecure, ",")
	}
	err := service.Serve(*natsURL, "stevedore-puller", func(ctx context.Context, js jetstream.JetStream) error {
		var err error
		if cfg.Platform, err = service.Platform(*platform); err != nil {
			return err
		}
		svc, err := puller.New(js, cfg)
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
	if err != nil {
		log.Error("puller stopped", "error", err.Error())
		os.Exit(1)
	}
}
