// Command resolver runs one replica of Stevedore's resolver service against
// a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"log/slog"
	"os"

	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

func main() {
	common := service.RegisterCommon(flag.CommandLine)
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default the host name (STEVEDORE_INSTANCE)")
	platform := flag.String("platform", os.Getenv("STEVEDORE_PLATFORM"), "platform for requests that name none; default this host's (STEVEDORE_PLATFORM)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	p, err := service.Platform(*platform)
	if err != nil {
		log.Error("stevedore-resolver stopped", "error", err.Error())
		os.Exit(1)
	}
	os.Exit(service.Main(common, log, resolver.Member(resolver.Config{Replica: common.Replica(*instance, log), Platform: p})))
}
