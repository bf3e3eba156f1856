// Command exporter runs one replica of Stevedore's remote cache service
// against a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"os"

	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/exporter"
)

func main() {
	flags := service.RegisterCommon(flag.CommandLine)
	flags.Instance("replica name; default host name and pid")
	flags.Registry()
	window := flag.Int("window", service.IntEnv("STEVEDORE_EXPORT_WINDOW", exporter.DefaultWindow), "blobs one export writes at once (STEVEDORE_EXPORT_WINDOW)")
	flag.Parse()
	os.Exit(service.Main(flags, exporter.Def.Member(exporter.Config{Window: *window})))
}
