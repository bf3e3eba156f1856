package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/tagwatch"
)

func newWatchTags(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch-tags",
		Short: "Keep the fleet watching tags for moves (add, rm, ls)",
		Long: `watch-tags edits the set of tags the fleet re-resolves on an interval (the
puller's --tag-watch-interval, once per interval for the whole fleet). A move
publishes source.changed, which "stevedore watch --changes" follows; with
--prepull the fleet also pulls the new digest onto its snapshotters. The set
is kept in JetStream and survives the loss of any replica. It needs a running
fleet: --nats, or nats://127.0.0.1:4222 where "stevedore up" listens.`,
	}
	var (
		platform string
		prepull  bool
	)
	add := &cobra.Command{
		Use:   "add REF…",
		Short: "Watch the tags of REF…",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachWatched(cmd, g, platform, args, func(store *tagwatch.Store, ref, p string) error {
				if err := store.Add(cmd.Context(), tagwatch.Watch{Ref: ref, Platform: p, Prepull: prepull}); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "watching %s\n", ref)
				return nil
			})
		},
	}
	add.Flags().StringVar(&platform, "platform", "", "platform a pre-pull is for, e.g. linux/arm64 (default: the fleet's)")
	add.Flags().BoolVar(&prepull, "prepull", false, "pull the new digest onto the snapshotters when the tag moves")
	var rmPlatform string
	rm := &cobra.Command{
		Use:   "rm REF…",
		Short: "Stop watching REF…",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachWatched(cmd, g, rmPlatform, args, func(store *tagwatch.Store, ref, p string) error {
				return store.Remove(cmd.Context(), ref, p)
			})
		},
	}
	rm.Flags().StringVar(&rmPlatform, "platform", "", "the platform the watch was added with")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the watched tags and what each last pointed to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, done, err := watchStore(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			ws, err := store.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REF\tPLATFORM\tPREPULL\tDIGEST\tCHECKED")
			for _, w := range ws {
				d, checked := w.Digest, "never"
				if d == "" {
					d = "-"
				}
				if !w.CheckedAt.IsZero() {
					checked = w.CheckedAt.UTC().Format(time.RFC3339)
				}
				if w.Error != "" {
					checked += " (" + w.Error + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", w.Ref, orDash(w.Platform), w.Prepull, d, checked)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(add, rm, ls)
	return cmd
}

// watchStore connects to the fleet's watches.
func watchStore(cmd *cobra.Command, g *globals) (*tagwatch.Store, func(), error) {
	nc, js, err := dialRunning(cmd.Context(), g, "stevedore-watch-tags")
	if err != nil {
		return nil, nil, err
	}
	store, err := tagwatch.Open(cmd.Context(), js)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return store, nc.Close, nil
}

// watchRef is ref normalised as pull and resolve do it (alpine is
// docker.io/library/alpine:latest), without the docker-image:// scheme.
// eachWatched opens the fleet's watch set and calls do with it for each
// REF of refs (as the watch set names it) and the platform parsed from
// platform, stopping at the first error.
func eachWatched(cmd *cobra.Command, g *globals, platform string, refs []string, do func(store *tagwatch.Store, ref, platform string) error) error {
	store, done, err := watchStore(cmd, g)
	if err != nil {
		return err
	}
	defer done()
	p, err := watchPlatform(platform)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if err := do(store, watchRef(ref), p); err != nil {
			return err
		}
	}
	return nil
}

func watchRef(ref string) string {
	if op, err := (&sourceFlags{}).op(ref); err == nil {
		ref = op.Identifier
	}
	return strings.TrimPrefix(ref, "docker-image://")
}

// watchPlatform normalises a --platform value; empty stays empty.
func watchPlatform(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	spec, err := platforms.Parse(p)
	if err != nil {
		return "", errors.Join(fmt.Errorf("--platform %q", p), err)
	}
	return platforms.FormatAll(platforms.Normalize(spec)), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
