// Command exporter runs one replica of Stevedore's remote cache service
// against a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/exporter"
)

func main() {
	natsURL := flag.String("nats", service.Env("STEVEDORE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (STEVEDORE_NATS_URL)")
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default host name and pid (STEVEDORE_INSTANCE)")
	insecure := flag.String("insecure-registries", os.Getenv("STEVEDORE_INSECURE_REGISTRIES"), "comma-separated registry hosts reached over plain HTTP (STEVEDORE_INSECURE_REGISTRIES)")
	dockerConfig := flag.String("docker-config", os.Getenv("DOCKER_CONFIG"), "directory of config.json with registry credentials (DOCKER_CONFIG)")
	window := flag.String("window", service.Env("STEVEDORE_EXPORT_WINDOW", strconv.Itoa(exporter.DefaultWindow)), "blobs one export writes at once (STEVEDORE_EXPORT_WINDOW)")
	provision := flag.Bool("provision", service.Env("STEVEDORE_PROVISION", "true") == "true", "create streams, buckets and consumers at start (STEVEDORE_PROVISION)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	n, err := strconv.Atoi(*window)
	if err != nil || n < 1 {
		log.Error("bad -window", "value", *window)
		os.Exit(2)
	}
	cfg := exporter.Config{Instance: *instance, Provision: *provision, Logger: log, Window: n,
		Registry: registry.Config{DockerConfigDir: *dockerConfig}}
	if *insecure != "" {
		cfg.Registry.Insecure = strings.Split(*insecure, ",")
	}
	err = service.Serve(*natsURL, "stevedore-exporter", func(ctx context.Context, js jetstream.JetStream) error {
		svc, err := exporter.New(js, cfg)
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
	if err != nil {
		log.Error("exporter stopped", "error", err.Error())
		os.Exit(1)
	}
}
