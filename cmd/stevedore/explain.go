package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// explained is one miss and what it differs in, as explain --json prints
// it.
type explained struct {
	// Build is the build that missed.
	Build string `json:"build"`
	// Source is the source that missed.
	Source events.SourceOp `json:"source"`
	// Keys are its keys.
	Keys []events.CacheKey `json:"keys"`
	// Explanation is the puller's (cache.miss explanation); nil when it
	// gave none.
	Explanation *events.MissExplanation `json:"explanation"`
}

func newExplain(g *globals) *cobra.Command {
	var (
		src     sourceFlags
		sf      serviceFlags
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "explain BUILD|REF",
		Short: "Say why a build's sources missed the cache",
		Long: `explain prints, for each source of BUILD that missed the cache, what it
differs in from the nearest record the fleet made of the same source: the tag
now points to another digest (old and new, and when each was seen), another
reference, another platform, other attributes, the first layer whose diff_id
differs, or a record that was pruned. Given a REF that is not a build with
events, it resolves REF without pulling (a dry run) and explains that.
The facts are in the builds' cache.miss events (explanation), so a watcher
sees the same. The fleet keeps them for docker-image sources.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := within(cmd, timeout)
			defer cancel()
			f, err := connectFleet(ctx, g, &sf)
			if err != nil {
				return err
			}
			defer f.close()
			misses, err := buildMisses(ctx, f, args[0])
			if err != nil {
				return err
			}
			if misses == nil {
				if misses, err = dryRun(ctx, f, &src, args[0]); err != nil {
					return err
				}
			}
			if asJSON {
				return json.NewEncoder(g.stdout).Encode(misses)
			}
			printExplained(g.stdout, misses)
			return nil
		},
	}
	src.register(cmd)
	sf.registerEmbedded(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the misses and their explanations as JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// buildMisses returns the misses among arg's stored events; nil when arg
// is no build with events (a REF, then).
func buildMisses(ctx context.Context, f *fleet, arg string) ([]explained, error) {
	if events.ValidateBuildID(arg) != nil {
		return nil, nil
	}
	stored, err := bus.Replay(ctx, f.js, arg)
	if err != nil || len(stored) == 0 {
		return nil, err
	}
	out := []explained{}
	for _, e := range stored {
		if m, ok := e.Data.(events.CacheMiss); ok {
			out = append(out, explained{Build: arg, Source: m.Source, Keys: m.Keys, Explanation: m.Explanation})
		}
	}
	return out, nil
}

// dryRun resolves ref without pulling and returns its miss, if it missed.
func dryRun(ctx context.Context, f *fleet, src *sourceFlags, ref string) ([]explained, error) {
	op, err := src.op(ref)
	if err != nil {
		return nil, err
	}
	build := client.NewBuildID()
	out, err := client.Run(ctx, f.js, build, events.SourceResolveRequested{Source: op}, nil)
	var buildErr *client.BuildError
	if errors.As(err, &buildErr) {
		return nil, fmt.Errorf("%s: %w", op.Identifier, buildErr)
	}
	if err != nil {
		return nil, err
	}
	if out.Miss == nil {
		return []explained{}, nil
	}
	return []explained{{Build: build, Source: out.Miss.Source, Keys: out.Miss.Keys, Explanation: out.Miss.Explanation}}, nil
}

// printExplained renders misses as text.
func printExplained(w io.Writer, misses []explained) {
	if len(misses) == 0 {
		fmt.Fprintln(w, "no source missed: nothing to explain")
		return
	}
	for i, m := range misses {
		if i > 0 {
			fmt.Fprintln(w)
		}
		platform := ""
		if m.Source.Platform != nil {
			platform = " (" + platforms.FormatAll(*m.Source.Platform) + ")"
		}
		fmt.Fprintf(w, "%s%s missed in build %s\n", m.Source.Identifier, platform, m.Build)
		for _, line := range explanationLines(m.Explanation) {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
}

// explanationLines are the sentences of an explanation.
func explanationLines(e *events.MissExplanation) []string {
	if e == nil {
		return []string{"no explanation: the fleet keeps what records were made from for docker-image sources only"}
	}
	if e.Nearest == nil {
		return []string{"the fleet has made no record of " + e.Source + " (none it still remembers)"}
	}
	n := e.Nearest
	lines := []string{fmt.Sprintf("nearest record: build %s, %s for %s, seen %s", n.Build, n.Identifier, n.Platform, stamp(n.SeenAt))}
	if len(e.Differences) == 0 {
		lines = append(lines, "no difference found: the record was made from the same facts")
	}
	for _, d := range e.Differences {
		switch d.Kind {
		case events.DiffTagMoved:
			lines = append(lines, fmt.Sprintf("tag moved: %s pointed to %s (seen %s), now to %s (seen %s)", d.Name, d.Old, stampPtr(d.OldSeen), d.New, stampPtr(d.NewSeen)))
		case events.DiffReference:
			lines = append(lines, fmt.Sprintf("another reference: the record is of %s, this is %s", d.Old, d.New))
		case events.DiffPlatform:
			lines = append(lines, fmt.Sprintf("another platform: the record is for %s, this is for %s", d.Old, d.New))
		case events.DiffAttribute:
			lines = append(lines, fmt.Sprintf("attribute %s: %s in the record, %s now", d.Name, orUnset(d.Old), orUnset(d.New)))
		case events.DiffLayer:
			lines = append(lines, fmt.Sprintf("layer %s is the first whose diff_id differs: %s in the record, %s now", d.Name, orNoLayer(d.Old), orNoLayer(d.New)))
		case events.DiffPruned:
			lines = append(lines, fmt.Sprintf("pruned: the record (key %s) is no longer in the cache index", d.Old))
		default:
			lines = append(lines, fmt.Sprintf("%s: %s then, %s now", d.Kind, d.Old, d.New))
		}
	}
	return lines
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func stampPtr(t *time.Time) string {
	if t == nil {
		return "at an unknown time"
	}
	return stamp(*t)
}

func orUnset(v string) string {
	if v == "" {
		return "unset"
	}
	return v
}

func orNoLayer(v string) string {
	if v == "" {
		return "no such layer"
	}
	return v
}
