// Command puller runs one replica of Stevedore's puller service against a
// NATS JetStream server. Flags default to STEVEDORE_* environment
// variables, so a container is configured through its environment.
package main

import (
	"flag"
	"os"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/services/puller"
)

func main() {
	flags := service.RegisterCommon(flag.CommandLine)
	flags.Instance("replica name; default host name and pid")
	flags.Platform("platform for sources that name none")
	flags.Registry()
	flags.Downloads("directory (an OCI image layout) where this replica keeps what it downloads of http sources, for snapshotters that share it at the same path; empty keeps nothing")
	tagMaxAge := flag.Duration("tag-max-age", service.DurationEnv("STEVEDORE_TAG_MAX_AGE", 0), "how long the fleet's resolution of a tag answers without asking the registry; 0 asks every time (STEVEDORE_TAG_MAX_AGE)")
	tagRevalidate := flag.Duration("tag-revalidate", service.DurationEnv("STEVEDORE_TAG_REVALIDATE", 0), "how long past --tag-max-age a resolution answers at once while the fleet revalidates it (STEVEDORE_TAG_REVALIDATE)")
	tagWatch := flag.Duration("tag-watch-interval", service.DurationEnv("STEVEDORE_TAG_WATCH_INTERVAL", time.Minute), "how often the fleet re-resolves the watched tags; 0: this replica takes no part (STEVEDORE_TAG_WATCH_INTERVAL)")
	flag.Parse()
	os.Exit(service.Main(flags, puller.Def.Member(puller.Config{TagMaxAge: *tagMaxAge, TagRevalidate: *tagRevalidate, TagWatchInterval: *tagWatch})))
}
