package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
)

func newPrune(g *globals) *cobra.Command {
	var (
		sf      serviceFlags
		keepFor time.Duration
		dataDir string
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove snapshots and blobs no cache record references",
		Long: `prune works on the embedded stack's data dir: it drops the cache records of
this node older than --keep-for (all of them with 0), then removes every
snapshot and blob that no remaining record references. A fleet's
snapshotters prune themselves (STEVEDORE_KEEP_FOR).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.natsURL != "" {
				return errors.New("prune works on an embedded data dir (--data-dir), not on a fleet; set STEVEDORE_KEEP_FOR on its snapshotters")
			}
			f, err := connectFleet(cmd.Context(), g, &sf, dataDir)
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
	sf.registerEmbedded(cmd)
	cmd.Flags().DurationVar(&keepFor, "keep-for", 7*24*time.Hour, "keep cache records younger than this")
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "the embedded stack's data dir")
	return cmd
}
