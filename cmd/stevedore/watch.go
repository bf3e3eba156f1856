package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

func newWatch(g *globals) *cobra.Command {
	var (
		asJSON       bool
		follow       bool
		startTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch BUILD",
		Short: "Replay a build's events and follow it live",
		Long: `watch prints every stored event of BUILD in order, then new ones as they
arrive, until the build ends (or forever with --follow): past every request
stored so far (cache imports, the pull, cache exports), to the end of the
last. A build with no event yet is waited for --start-timeout, then said
not to exist. It needs a running
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
			ctx, started, stop := waitForStart(cmd.Context(), args[0], startTimeout)
			defer stop()
			if len(stored) > 0 {
				started.saw()
			} else if startTimeout > 0 {
				fmt.Fprintf(g.stderr, "build %s has no events yet; waiting up to %s for it to start\n", args[0], startTimeout)
			} else {
				fmt.Fprintf(g.stderr, "build %s has no events yet; waiting for it to start\n", args[0])
			}
			replayed := last == ""
			var (
				out  client.Outcome
				perr error
			)
			err = client.Follow(ctx, js, args[0], false, func(e events.Event) bool {
				started.saw()
				if asJSON {
					perr = printJSON(g.stdout, e)
				} else {
					printPlain(g.stdout, e)
				}
				out.Add(e)
				replayed = replayed || e.ID == last
				return perr == nil && (follow || !replayed || !out.Done())
			})
			var none errNoBuild
			if errors.As(context.Cause(ctx), &none) {
				return none
			}
			if err != nil && context.Cause(cmd.Context()) == nil {
				return err
			}
			return perr
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as a JSON object (CloudEvents attributes and data)")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep following after the build ended")
	cmd.Flags().DurationVar(&startTimeout, "start-timeout", 10*time.Second, "how long a build without events may take to start before watch says there is no such build (0: wait forever)")
	return cmd
}
