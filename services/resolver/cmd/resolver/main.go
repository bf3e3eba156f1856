// Command resolver runs one replica of Stevedore's resolver service against
// a NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"os"

	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

func main() {
	flags := service.RegisterCommon(flag.CommandLine)
	flags.Instance("replica name; default the host name")
	flags.Platform("platform for requests that name none; default this host's")
	flag.Parse()
	os.Exit(service.Main(flags, resolver.Def.Member(resolver.Config{})))
}
