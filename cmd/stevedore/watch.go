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
		changes      bool
		startTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch BUILD | watch --changes",
		Short: "Replay a build's events and follow it live",
		Long: `watch prints every stored event of BUILD in order, then new ones as they
arrive, until the build ends (or forever with --follow): past every request
stored so far (cache imports, the pull, cache exports), to the end of the
last. A build with no event yet is waited for --start-timeout, then said
not to exist. It needs a running
fleet: --nats, or nats://127.0.0.1:4222 where "stevedore up" listens.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case changes && len(args) > 0:
				return errors.New("--changes follows the watched tags' moves: give no BUILD")
			case changes:
				// The moves of watched tags (stevedore watch-tags), for
				// as long as it runs.
				args, follow, startTimeout = []string{events.WatchBuildID}, true, 0
			case len(args) == 0:
				return errors.New("watch needs a BUILD, or --changes")
			}
			if err := events.ValidateBuildID(args[0]); err != nil {
				return err
			}
			nc, js, err := dialRunning(cmd.Context(), g, "stevedore-watch")
			if err != nil {
				return err
			}
			defer nc.Close()
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
			} else if changes {
				fmt.Fprintln(g.stderr, "no watched tag has moved yet; waiting for the first move (stevedore watch-tags ls shows the watches)")
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
	cmd.Flags().BoolVar(&changes, "changes", false, "follow the moves of the watched tags (source.changed, see watch-tags) instead of a build")
	cmd.Flags().DurationVar(&startTimeout, "start-timeout", 10*time.Second, "how long a build without events may take to start before watch says there is no such build (0: wait forever)")
	return cmd
}
