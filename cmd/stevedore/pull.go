package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

func newPull(g *globals) *cobra.Command {
	var (
		c       buildCommand
		output  string
		imports []string
		exports []string
	)
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Resolve a source, and snapshot it unless its keys hit",
		Long: `pull starts a build for REF that wants its content: the keys are computed and
looked up, and if every key misses, a snapshotter fetches the layers (in
order, windowed, unpacking while downloading) into a containerd snapshotter
and records the result under every key. A pull of something already
snapshotted is a cache hit and fetches nothing.

Progress goes to stderr the way buildctl shows it (--progress tty, plain,
rawjson: buildctl's SolveStatus JSON, one object a line, or quiet: none);
the keys, the chainID and where the snapshot is go to stdout. The build's
CloudEvents are what "stevedore watch --json" prints.
--output (-o) also writes the root filesystem in one pass: from the
snapshot itself when it is on this machine (the embedded stack), streamed
from the node that holds it otherwise (--nats), and from the registry only
when that node does not answer; every blob then verified as it streams.
It is written beside the destination and renamed into place, so a failed
pull leaves nothing in it. In buildctl's forms: type=local,dest=DIR (or a plain DIR) fills a directory,
type=tar,dest=FILE writes a tar (dest=- writes it to stdout, and the
summary then goes to stderr). Other types (image, oci, docker) are refused:
a pull has no image to write.

--import-cache and --export-cache (repeatable) take buildctl's attributes
(type=local,src=DIR / type=local,dest=DIR, type=registry,ref=REF). The
imports run before the pull and the exports after it ends well, all on the
pull's build, so "stevedore watch" of it shows them. A failed import does
not fail the pull (BuildKit goes on without that cache); a failed export
does. An import's records serve every build of the fleet, not only this
one (they are keyed by verified diffIDs); "stevedore explain ID" says
whether a hit came from an import this pull named or from another's, and
which named import had no record for a miss.

--oci-layout [STORE=]DIR[@DIGEST] (repeatable) serves an OCI image layout of
this machine to the fleet, in a client session, until the command ends:
pull --oci-layout DIR@sha256:… pulls that image (oci-layout://localhost/
layout@sha256:…), with the keys its docker-image reference would have; an
oci-layout:// or oci-layout+blob:// REF reads the layouts given, its
oci.session and oci.store set unless --attr gives them.

--secret id=NAME[,src=FILE|,env=VAR] (repeatable, buildctl's syntax) serves
a secret in the same session, for the credentials of git and http sources:
GIT_AUTH_TOKEN or GIT_AUTH_HEADER (the names a git source has unless
--attr git.authtokensecret=… or git.authheadersecret=… says otherwise,
each also tried with ".<host>" appended first), HTTP_AUTH_TOKEN_<host> or
HTTP_AUTH_HEADER_<host>, or the name --attr http.authheadersecret=… gives.
The fleet reads a secret when it sends the request that needs it, sealed
to the reading service; no secret is in any event.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			for i, attrs := range imports {
				if imports[i], err = importSource(attrs); err != nil {
					return fmt.Errorf("--import-cache: %w", err)
				}
			}
			for i, attrs := range exports {
				if exports[i], err = exportTarget(attrs); err != nil {
					return fmt.Errorf("--export-cache: %w", err)
				}
			}
			var dest *outputSpec
			if output != "" {
				d, err := parseOutput(output)
				if err != nil {
					return fmt.Errorf("--output %w", err)
				}
				dest = &d
			}
			show, err := newDisplay(c.progress, "Pulling", g.stderr)
			if err != nil {
				return err
			}
			return c.run(cmd, g, args, func(ctx context.Context, f *fleet, op events.SourceOp) error {
				return pull(ctx, g, &c, f, op, pullOutput{imports: imports, exports: exports, dest: dest, show: show})
			})
		},
	}
	c.register(cmd, "print the outcome as JSON", 30*time.Minute)
	c.registerProgress(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the root filesystem: DIR, type=local,dest=DIR or type=tar,dest=FILE (dest=- for stdout), buildctl's forms")
	cmd.Flags().StringArrayVar(&imports, "import-cache", nil, "import a BuildKit remote cache before the pull: type=local,src=DIR or type=registry,ref=REF (repeatable)")
	cmd.Flags().StringArrayVar(&exports, "export-cache", nil, "export the pull's result as a BuildKit remote cache after it: type=local,dest=DIR or type=registry,ref=REF (repeatable)")
	return cmd
}

// pullOutput is what a pull does besides the pull, as its flags say.
type pullOutput struct {
	// imports and exports are the caches imported before and exported
	// after (--import-cache, --export-cache), checked.
	imports, exports []string
	// dest is where --output writes the root filesystem; nil for
	// nowhere.
	dest *outputSpec
	// show displays the progress.
	show display
}

// pull is the pull of op on the open fleet f, in build c.buildID: the
// imports, the pull and the exports, their summary (or JSON), then the
// root filesystem written to --output.
func pull(ctx context.Context, g *globals, c *buildCommand, f *fleet, op events.SourceOp, po pullOutput) error {
	// A tar on stdout leaves stdout to the tar: the summary goes to
	// stderr.
	summary := g.stdout
	if po.dest != nil && po.dest.stdout() {
		summary = g.stderr
	}
	req := events.SourceResolveRequested{Source: op, Snapshot: true, Session: f.served.id()}
	if req.Session == "" {
		// A session with nothing in it still tells the fleet this
		// client is there: work for the build stops once it is gone
		// (Ctrl-C, a killed CI job).
		alive, err := servePresence(ctx, f.js.Conn(), c.buildID)
		if err != nil {
			return err
		}
		defer func() { _ = alive.Stop() }()
		req.Session = alive.ID()
	}
	each := po.show.event
	var early *earlyOutput
	if po.dest != nil && po.dest.Type == outputLocal && f.stack != nil {
		// Embedded: the output is written as the layers are committed.
		early = newEarlyOutput(ctx, po.dest.Dest, f.stack.snap.Store().ExportChain)
		defer early.close()
		each = early.event(each)
	}
	res, err := pullWithCache(ctx, f, c.buildID, req, po.imports, po.exports, each)
	po.show.done()
	if err != nil {
		return err
	}
	out := res.pull
	if c.asJSON {
		enc := json.NewEncoder(summary)
		for _, o := range res.outcomes() {
			if err := enc.Encode(o); err != nil {
				return err
			}
		}
	} else {
		printPull(summary, out, f)
		printCacheRuns(summary, res)
		f.served.print(summary)
	}
	if err := out.Err(); err != nil {
		if tty, ok := po.show.(*ttyDisplay); ok && tty.showedError() {
			return shownError{what: op.Identifier, err: err}
		}
		return fmt.Errorf("%s: %w", op.Identifier, err)
	}
	for _, r := range res.exports {
		if err := r.err(); err != nil {
			return fmt.Errorf("--export-cache %w", err)
		}
	}
	if po.dest == nil {
		return nil
	}
	root, err := rootfsOf(ctx, out, f, c.sf, c.buildID)
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	if early != nil {
		if w, ok := early.writer(snapshotKeyOf(out)); ok {
			root = w
		}
	}
	if err := writeOutput(ctx, *po.dest, g.stdout, root); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	if !c.asJSON {
		fmt.Fprintf(summary, "output    %s (%s)\n", po.dest, root.from)
	}
	return nil
}

// pullResult is a pull and the cache imports and exports around it.
type pullResult struct {
	// imports ran before the pull, in the order given.
	imports []cacheRun
	// pull is the pull's outcome.
	pull client.Outcome
	// exports ran after the pull, in the order given; none when the pull
	// failed.
	exports []cacheRun
}

// outcomes are every outcome in the order they ran.
func (r pullResult) outcomes() []client.Outcome {
	var out []client.Outcome
	for _, im := range r.imports {
		out = append(out, im.out)
	}
	out = append(out, r.pull)
	for _, ex := range r.exports {
		out = append(out, ex.out)
	}
	return out
}

// pullWithCache imports each cache source, pulls op, and when the pull
// ended well exports each target, all on build buildID. A failed import or
// export is in its outcome, not in the error, which is kept for the fleet
// not answering.
func pullWithCache(ctx context.Context, f *fleet, buildID string, req events.SourceResolveRequested, imports, exports []string, each func(events.Event)) (pullResult, error) {
	var res pullResult
	var buildErr *client.BuildError
	for _, src := range imports {
		// A local cache is served for the whole pull, which reads its
		// blobs through the session, as BuildKit scopes --import-cache
		// to its build.
		im := events.CacheImportRequested{Source: src}
		stop, err := client.ServeImport(ctx, f.js, buildID, &im)
		if err != nil {
			return res, fmt.Errorf("--import-cache %s: %w", src, err)
		}
		defer stop()
		out, err := client.ImportCache(ctx, f.js, buildID, im, each)
		if err != nil && !errors.As(err, &buildErr) {
			return res, err
		}
		res.imports = append(res.imports, cacheRun{attrs: src, out: out})
	}
	var err error
	res.pull, err = client.Run(ctx, f.js, buildID, req, each)
	if err != nil && !errors.As(err, &buildErr) {
		return res, err
	}
	if err != nil {
		return res, nil
	}
	for _, target := range exports {
		out, err := client.ExportCache(ctx, f.js, buildID, events.CacheExportRequested{Target: target, Build: buildID}, each)
		if err != nil && !errors.As(err, &buildErr) {
			return res, fmt.Errorf("--export-cache %s: %w", target, err)
		}
		res.exports = append(res.exports, cacheRun{attrs: target, out: out})
	}
	return res, nil
}

// printCacheRuns writes the result of each import, then of each export.
func printCacheRuns(w io.Writer, res pullResult) {
	if len(res.imports)+len(res.exports) == 0 {
		return
	}
	tw := newTable(w)
	defer tw.Flush()
	for _, r := range res.imports {
		writeImported(tw, r)
	}
	for _, r := range res.exports {
		writeExported(tw, r)
	}
}

// layersOf returns the layers of the build's result and where their blobs
// can be fetched.
func layersOf(out client.Outcome) ([]events.Layer, string) {
	ref := ""
	switch {
	case out.Hit != nil && out.Hit.CacheOpts != nil:
		ref = out.Hit.CacheOpts.Ref
	case out.Miss != nil && out.Miss.CacheOpts != nil:
		ref = out.Miss.CacheOpts.Ref
	}
	switch {
	case out.Snapshot != nil:
		return out.Snapshot.Layers, ref
	case out.Hit != nil:
		return out.Hit.Record.Layers, ref
	}
	return nil, ref
}

// snapshotKeyOf is the name of the outcome's snapshot; empty when none.
func snapshotKeyOf(out client.Outcome) string {
	switch {
	case out.Snapshot != nil:
		return out.Snapshot.SnapshotKey
	case out.Hit != nil:
		return out.Hit.Record.SnapshotKey
	}
	return ""
}

// snapshotterOf is the snapshotter kind holding the outcome's snapshot and
// its directory, as the answering node said it (snapshot.ready, or the
// record of a hit), else the embedded stack's; empty when not known (a
// record written before records carried it, say) rather than a guess.
func snapshotterOf(out client.Outcome, f *fleet) (kind, dir string) {
	switch {
	case out.Snapshot != nil && out.Snapshot.Snapshotter != "":
		return out.Snapshot.Snapshotter, out.Snapshot.SnapshotsDir
	case out.Snapshot == nil && out.Hit != nil && out.Hit.Record.Snapshotter != "":
		return out.Hit.Record.Snapshotter, out.Hit.Record.SnapshotsDir
	case f.stack != nil:
		store := f.stack.snap.Store()
		return string(store.Kind()), filepath.Join(store.Root(), "snapshots", string(store.Kind()))
	}
	return "", ""
}

func printPull(w io.Writer, out client.Outcome, f *fleet) {
	printOutcome(w, out)
	if out.Snapshot == nil && (out.Hit == nil || out.Hit.Snapshot) {
		return // no result, or the snapshot of a lazy hit failed
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	chainID, node, key, size := "", "", "", int64(0)
	switch {
	case out.Snapshot != nil:
		chainID, node, key, size = out.Snapshot.ChainID, out.Snapshot.Node, out.Snapshot.SnapshotKey, out.Snapshot.Size
		label, text := fetchedLine(*out.Snapshot)
		fmt.Fprintf(tw, "%s\t%s\n", label, text)
	case out.Hit != nil:
		chainID, node, key, size = out.Hit.Record.ChainID.String(), out.Hit.Record.Node, out.Hit.Record.SnapshotKey, out.Hit.Record.Size
		fmt.Fprintln(tw, "fetched\tnothing (cache hit)")
	}
	if chainID != "" {
		fmt.Fprintf(tw, "chainID\t%s\n", chainID)
	}
	location := fmt.Sprintf("snapshot %s on node %s", key, orNone(node))
	if kind, dir := snapshotterOf(out, f); kind != "" {
		location += fmt.Sprintf(" (%s snapshotter in %s)", kind, dir)
	}
	fmt.Fprintf(tw, "snapshot\t%s\n", location)
	fmt.Fprintf(tw, "size\t%s\n", humanBytes(size))
}
