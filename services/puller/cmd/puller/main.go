// Command puller runs one replica of Stevedore's puller service against a
// NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/puller"
)

func main() {
	common := service.RegisterCommon(flag.CommandLine)
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default host name and pid (STEVEDORE_INSTANCE)")
	platform := flag.String("platform", os.Getenv("STEVEDORE_PLATFORM"), "platform for sources that name none (STEVEDORE_PLATFORM)")
	insecure := flag.String("insecure-registries", os.Getenv("STEVEDORE_INSECURE_REGISTRIES"), "comma-separated registry hosts reached over plain HTTP (STEVEDORE_INSECURE_REGISTRIES)")
	dockerConfig := flag.String("docker-config", os.Getenv("DOCKER_CONFIG"), "directory of config.json with registry credentials (DOCKER_CONFIG)")
	tagMaxAge := flag.Duration("tag-max-age", service.DurationEnv("STEVEDORE_TAG_MAX_AGE", 0), "how long the fleet's resolution of a tag answers without asking the registry; 0 asks every time (STEVEDORE_TAG_MAX_AGE)")
	tagRevalidate := flag.Duration("tag-revalidate", service.DurationEnv("STEVEDORE_TAG_REVALIDATE", 0), "how long past --tag-max-age a resolution answers at once while the fleet revalidates it (STEVEDORE_TAG_REVALIDATE)")
	tagWatch := flag.Duration("tag-watch-interval", service.DurationEnv("STEVEDORE_TAG_WATCH_INTERVAL", time.Minute), "how often the fleet re-resolves the watched tags; 0: this replica takes no part (STEVEDORE_TAG_WATCH_INTERVAL)")
	downloads := flag.String("http-downloads", os.Getenv("STEVEDORE_HTTP_DOWNLOADS"), "directory (an OCI image layout) where this replica keeps what it downloads of http sources, for snapshotters that share it at the same path; empty keeps nothing (STEVEDORE_HTTP_DOWNLOADS)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	p, err := service.Platform(*platform)
	if err != nil {
		log.Error("stevedore-puller stopped", "error", err.Error())
		os.Exit(1)
	}
	os.Exit(service.Main(common, log, puller.Member(puller.Config{Replica: common.Replica(*instance, log), Platform: p,
		TagMaxAge: *tagMaxAge, TagRevalidate: *tagRevalidate, TagWatchInterval: *tagWatch, Downloads: *downloads,
		Registry: registry.Config{DockerConfigDir: *dockerConfig, Insecure: service.List(*insecure)}})))
}
