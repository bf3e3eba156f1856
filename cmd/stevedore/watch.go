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
arrive, until the build ends (or forever with --follow). It needs a running
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
			nc, js, err := bus.ConnectOnce(url, "stevedore-watch", 5*time.Second)
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := client.WaitReady(cmd.Context(), js, 5*time.Second); err != nil {
				return err
			}
			var perr error
			err = client.Follow(cmd.Context(), js, args[0], !follow, func(e events.Event) bool {
				if asJSON {
					perr = printJSON(g.stdout, e)
					return perr == nil
				}
				printPlain(g.stdout, e)
				return true
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
