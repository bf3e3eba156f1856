// Command exporter runs one replica of Stevedore's remote cache service
// against a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"log/slog"
	"os"
	"strconv"

	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/exporter"
)

func main() {
	common := service.RegisterCommon(flag.CommandLine)
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default host name and pid (STEVEDORE_INSTANCE)")
	insecure := flag.String("insecure-registries", os.Getenv("STEVEDORE_INSECURE_REGISTRIES"), "comma-separated registry hosts reached over plain HTTP (STEVEDORE_INSECURE_REGISTRIES)")
	dockerConfig := flag.String("docker-config", os.Getenv("DOCKER_CONFIG"), "directory of config.json with registry credentials (DOCKER_CONFIG)")
	window := flag.Int("window", intEnv("STEVEDORE_EXPORT_WINDOW", exporter.DefaultWindow), "blobs one export writes at once (STEVEDORE_EXPORT_WINDOW)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	os.Exit(service.Main(common, log, exporter.Member(exporter.Config{Replica: common.Replica(*instance, log), Window: *window,
		Registry: registry.Config{DockerConfigDir: *dockerConfig, Insecure: service.List(*insecure)}})))
}

func intEnv(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return n
	}
	return def
}
