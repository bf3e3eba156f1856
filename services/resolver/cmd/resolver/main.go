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
	common := service.RegisterCommon(flag.CommandLine)
	instance := flag.String("instance", os.Getenv("STEVEDORE_INSTANCE"), "replica name; default the host name (STEVEDORE_INSTANCE)")
	platform := flag.String("platform", os.Getenv("STEVEDORE_PLATFORM"), "platform for requests that name none; default this host's (STEVEDORE_PLATFORM)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	os.Exit(service.Main(common, "stevedore-resolver", log, func(ctx context.Context, js jetstream.JetStream, obs service.Observe) error {
		cfg := resolver.Config{Replica: common.Replica(*instance, log, obs)}
		var err error
		if cfg.Platform, err = service.Platform(*platform); err != nil {
			return err
		}
		svc, err := resolver.New(js, cfg)
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	}))
}
