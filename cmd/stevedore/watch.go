package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

func newWatch(g *globals) *cobra.Command {
	var (
		asJSON bool
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "watch BUILD",
		Short: "Replay a build's events and follow it live",
		Long: `watch prints every stored event of BUILD in order, then new ones as they
arrive, until the build ends (or forever with --follow): past every request
stored so far (cache imports, the pull, cache exports), to the end of the
last. It needs a running
fleet: --nats, or nats://127.0.0.1:4222 where "stevedore up" listens.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := events.ValidateBuildID(args[0]); err != nil {
				return err
			}
			url := g.natsURL
			if url == "" {
				url = "nats://127.0.0.1:4222"
			}
			nc, js, err := bus.ConnectOnce(url, "stevedore-watch", 5*time.Second, localCredentials(url)...)
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := client.WaitReady(cmd.Context(), js, 5*time.Second); err != nil {
				return err
			}
			// A build can hold several requests one after another (cache
			// imports, the pull, cache exports): the replay goes on past an
			// end while stored events follow it, and stops at the first end
			// after the last of them.
			stored, err := bus.Replay(cmd.Context(), js, args[0])
			if err != nil {
				return err
			}
			last := ""
			if len(stored) > 0 {
				last = stored[len(stored)-1].ID
			}
			replayed := last == ""
			var (
				out  client.Outcome
				perr error
			)
			err = client.Follow(cmd.Context(), js, args[0], false, func(e events.Event) bool {
				if asJSON {
					perr = printJSON(g.stdout, e)
				} else {
					printPlain(g.stdout, e)
				}
				out.Add(e)
				replayed = replayed || e.ID == last
				return perr == nil && (follow || !replayed || !out.Done())
			})
			if err != nil && context.Cause(cmd.Context()) == nil {
				return err
			}
			return perr
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as a JSON object (CloudEvents attributes and data)")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep following after the build ended")
	return cmd
}
