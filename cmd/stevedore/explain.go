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
	"github.com/stevedore-dev/stevedore/pkg/lineage"
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
	// gave none, and for a hit.
	Explanation *events.MissExplanation `json:"explanation"`
	// Hit says the source hit a record that came from a cache import
	// (only those hits are explained).
	Hit bool `json:"hit,omitempty"`
	// Imports is what the imports the build named have to do with it
	// (lineage.Imports): the import a hit's record came from, named or
	// not; the named imports that had no record for a miss's keys.
	Imports []events.Difference `json:"imports,omitempty"`
}

func newExplain(g *globals) *cobra.Command {
	var (
		c   fleetCommand
		src sourceFlags
	)
	cmd := &cobra.Command{
		Use:   "explain BUILD|REF",
		Short: "Say why a build's sources missed the cache",
		Long: `explain prints, for each source of BUILD that missed the cache, what it
differs in from the nearest record the fleet made of the same source: the tag
now points to another digest (old and new, and when each was seen), a git ref
to another commit, an http URL serves other content (and its ETag or
Last-Modified changed), another reference, another platform, other
attributes, the first layer whose diff_id differs, or a record that was
pruned. A local source always misses: its key names its client session and
is never looked up. Given a REF that is not a build with events, it resolves
REF without pulling (a dry run) and explains that. The facts are in the
builds' cache.miss events (explanation), so a watcher sees the same. The
fleet keeps them for docker-image, git and http sources (not those learnt
with a build's credentials).
Cache imports serve every build. For a build that imported caches (pull
--import-cache), explain also says, from its cache.imported events, which
import a hit's record came from and whether the build named it, and which
named import had no record for a miss's keys; a hit on an imported record
is explained too ("the record came from an import this build did not
name").`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.open(cmd, g, func(ctx context.Context, f *fleet) error {
				misses, err := buildMisses(ctx, f, args[0])
				if err != nil {
					return err
				}
				if misses == nil {
					if misses, err = dryRun(ctx, f, &src, args[0]); err != nil {
						return err
					}
				}
				if c.asJSON {
					return json.NewEncoder(g.stdout).Encode(misses)
				}
				printExplained(g.stdout, misses)
				return nil
			})
		},
	}
	src.register(cmd)
	c.register(cmd, "print the misses and their explanations as JSON", 2*time.Minute)
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
	var named []events.CacheImported
	for _, e := range stored {
		if im, ok := e.Data.(events.CacheImported); ok {
			named = append(named, im)
		}
	}
	out := []explained{}
	for _, e := range stored {
		switch p := e.Data.(type) {
		case events.CacheMiss:
			out = append(out, explained{Build: arg, Source: p.Source, Keys: p.Keys, Explanation: p.Explanation,
				Imports: lineage.Imports(named, nil, p.Keys)})
		case events.CacheHit:
			if x, ok := importedHit(arg, p, named); ok {
				out = append(out, x)
			}
		}
	}
	return out, nil
}

// importedHit is a hit explained when its record came from a cache
// import; ok is false otherwise.
func importedHit(build string, hit events.CacheHit, named []events.CacheImported) (explained, bool) {
	d := lineage.Imports(named, &hit.Record, nil)
	if len(d) == 0 {
		return explained{}, false
	}
	return explained{Build: build, Source: hit.Source, Keys: []events.CacheKey{hit.Key}, Hit: true, Imports: d}, true
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
	if out.Hit != nil {
		if x, ok := importedHit(build, *out.Hit, nil); ok {
			return []explained{x}, nil
		}
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
		if m.Hit {
			fmt.Fprintf(w, "%s%s hit in build %s\n", m.Source.Identifier, platform, m.Build)
		} else {
			fmt.Fprintf(w, "%s%s missed in build %s\n", m.Source.Identifier, platform, m.Build)
			for _, line := range explanationLines(m.Explanation) {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
		for _, line := range importLines(m.Imports) {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
}

// explanationLines are the sentences of an explanation.
func explanationLines(e *events.MissExplanation) []string {
	if e == nil {
		return []string{"no explanation: the fleet keeps what records were made from for docker-image, git and http sources only"}
	}
	if len(e.Differences) == 1 && e.Differences[0].Kind == events.DiffSessionScoped {
		return []string{fmt.Sprintf("session-scoped: a local source is keyed by its client session (%s) and never looked up in the cache index, so it always misses; the snapshotter transfers only what changed", e.Differences[0].Name)}
	}
	if e.Nearest == nil {
		return []string{"the fleet has made no record of " + e.Source + " (none it still remembers)"}
	}
	n := e.Nearest
	platform := ""
	if n.Platform != "" {
		platform = " for " + n.Platform
	}
	lines := []string{fmt.Sprintf("nearest record: build %s, %s%s, seen %s", n.Build, n.Identifier, platform, stamp(n.SeenAt))}
	if len(e.Differences) == 0 {
		lines = append(lines, "no difference found: the record was made from the same facts")
	}
	for _, d := range e.Differences {
		switch d.Kind {
		case events.DiffTagMoved:
			lines = append(lines, fmt.Sprintf("tag moved: %s pointed to %s (seen %s), now to %s (seen %s)", d.Name, d.Old, stampPtr(d.OldSeen), d.New, stampPtr(d.NewSeen)))
		case events.DiffRefMoved:
			lines = append(lines, fmt.Sprintf("ref moved: %s pointed to %s (seen %s), now to %s (seen %s)", d.Name, d.Old, stampPtr(d.OldSeen), d.New, stampPtr(d.NewSeen)))
		case events.DiffContentChanged:
			lines = append(lines, fmt.Sprintf("content changed: %s served %s (seen %s), now %s (seen %s)", d.Name, d.Old, stampPtr(d.OldSeen), d.New, stampPtr(d.NewSeen)))
		case events.DiffETag:
			lines = append(lines, fmt.Sprintf("ETag: %s in the record, %s now", orAbsent(d.Old), orAbsent(d.New)))
		case events.DiffLastModified:
			lines = append(lines, fmt.Sprintf("Last-Modified: %s in the record, %s now", orAbsent(d.Old), orAbsent(d.New)))
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

// importLines are the sentences of what a build's imports have to do
// with a result.
func importLines(ds []events.Difference) []string {
	var lines []string
	for _, d := range ds {
		switch d.Kind {
		case events.DiffImportUnnamed:
			lines = append(lines, fmt.Sprintf("the record came from an import this build did not name (import %s)", d.Name))
		case events.DiffImportNamed:
			lines = append(lines, fmt.Sprintf("the record came from an import this build named (import %s)", d.Name))
		case events.DiffImportLacked:
			lines = append(lines, fmt.Sprintf("an import named by this build had no record for key %s (import %s)", d.Old, d.Name))
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

func orAbsent(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

func orNoLayer(v string) string {
	if v == "" {
		return "no such layer"
	}
	return v
}
