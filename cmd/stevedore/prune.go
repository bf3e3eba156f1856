package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

func newPrune(g *globals) *cobra.Command {
	var (
		sf      serviceFlags
		keepFor time.Duration
		wait    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove snapshots and blobs no cache record references",
		Long: `prune drops the cache records of a node older than --keep-for (all of them
with 0), then removes every snapshot and blob that no remaining record
references.

With --nats it asks every snapshotter of the fleet (a running "stevedore up"
too) to prune its node, over the bus, and prints what each removed; it
waits up to --wait for the first answer. Without --nats it prunes the
embedded stack's data dir (--data-dir), which no "stevedore up" may be
using. Snapshotters also prune themselves periodically ("stevedore up
--keep-for", STEVEDORE_KEEP_FOR in a fleet).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keepFor < 0 {
				return errors.New("--keep-for: negative")
			}
			if g.natsURL != "" {
				return pruneFleet(cmd.Context(), g.natsURL, keepFor, wait, g.stdout)
			}
			f, err := connectFleet(cmd.Context(), g, &sf)
			if err != nil {
				return err
			}
			defer f.close()
			idx, err := cacheindex.Open(cmd.Context(), f.js)
			if err != nil {
				return err
			}
			res, err := f.stack.snap.Prune(cmd.Context(), idx, keepFor)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed %d snapshots and %d blobs, %s\n", res.Snapshots, res.Blobs, humanBytes(res.Bytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&sf.snapshotter, "snapshotter", "auto", "embedded stack only: snapshotter, auto, overlayfs or native")
	cmd.Flags().DurationVar(&keepFor, "keep-for", 7*24*time.Hour, "keep cache records younger than this")
	dataDirFlag(cmd, &sf.dataDir, "embedded stack only: its data dir")
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Second, "with --nats: how long to wait for the first snapshotter's answer")
	return cmd
}

// pruneQuiet is how long pruneFleet waits for further answers after one.
const pruneQuiet = 500 * time.Millisecond

// pruneFleet asks every snapshotter on the bus to prune its node and
// prints each answer.
func pruneFleet(ctx context.Context, url string, keepFor, wait time.Duration, w io.Writer) error {
	nc, _, err := bus.ConnectOnce(url, "stevedore-prune", 5*time.Second, localCredentials(url)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, err := json.Marshal(events.PruneRequest{KeepFor: keepFor.String()})
	if err != nil {
		return err
	}
	if err := nc.PublishRequest(events.SubjectPrune, inbox, req); err != nil {
		return err
	}
	var (
		total   events.PruneReply
		nodes   int
		failed  int
		timeout = wait
	)
	for {
		m, err := nextWithin(ctx, sub, timeout)
		if err != nil {
			if context.Cause(ctx) != nil {
				return context.Cause(ctx)
			}
			break
		}
		timeout = pruneQuiet
		var r events.PruneReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return fmt.Errorf("prune answer: %w", err)
		}
		nodes++
		if r.Error != "" {
			failed++
			fmt.Fprintf(w, "node %s: prune failed: %s\n", r.Node, r.Error)
			continue
		}
		fmt.Fprintf(w, "node %s: removed %d snapshots and %d blobs, %s\n", r.Node, r.Snapshots, r.Blobs, humanBytes(r.Bytes))
		total.Snapshots += r.Snapshots
		total.Blobs += r.Blobs
		total.Bytes += r.Bytes
	}
	if nodes == 0 {
		return fmt.Errorf("no snapshotter answered on %s within %s: is the fleet running its snapshotters?", url, wait)
	}
	if nodes > 1 {
		fmt.Fprintf(w, "removed %d snapshots and %d blobs, %s on %d nodes\n", total.Snapshots, total.Blobs, humanBytes(total.Bytes), nodes)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d nodes could not prune", failed, nodes)
	}
	return nil
}

// nextWithin is sub's next message within d.
func nextWithin(ctx context.Context, sub *nats.Subscription, d time.Duration) (*nats.Msg, error) {
	c, cancel := context.WithTimeoutCause(ctx, d, errors.New("no further answer"))
	defer cancel()
	return sub.NextMsgWithContext(c)
}
