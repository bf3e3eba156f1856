package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// exportTarget checks an export target (buildctl's --export-cache syntax)
// with BuildKit's rules and texts, and makes a local dest absolute, so a
// fleet running in another directory writes where the client means.
func exportTarget(attrs string) (string, error) {
	t, err := cachefmt.ParseExportTarget(attrs)
	return absLocal(attrs, t.Type, "dest", err)
}

// importSource is exportTarget for an import source (--import-cache) and
// its local src.
func importSource(attrs string) (string, error) {
	s, err := cachefmt.ParseImportSource(attrs)
	return absLocal(attrs, s.Type, "src", err)
}

// absLocal is attrs, of type typ as parsed with err, with the directory
// of a local cache (attribute key) made absolute.
func absLocal(attrs, typ, key string, err error) (string, error) {
	switch {
	case err != nil:
		return "", err
	case typ == cachefmt.TypeLocal:
		return absAttr(attrs, key)
	}
	return attrs, nil
}

// absAttr rewrites the attribute key of attrs (CSV, as cachefmt.Attrs
// reads it) to an absolute path; attrs is returned as written when the
// path is absolute already.
func absAttr(attrs, key string) (string, error) {
	r := csv.NewReader(strings.NewReader(attrs))
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return "", fmt.Errorf("cache attributes %q: %w", attrs, err)
	}
	changed := false
	for i, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || strings.ToLower(strings.TrimSpace(k)) != key || v == "" || filepath.IsAbs(v) {
			continue
		}
		abs, err := filepath.Abs(v)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", key, v, err)
		}
		fields[i], changed = k+"="+abs, true
	}
	if !changed {
		return attrs, nil
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	if err := w.Write(fields); err != nil {
		return "", err
	}
	w.Flush()
	return strings.TrimSuffix(b.String(), "\n"), w.Error()
}

// cacheRun is one cache export or import and how it ended.
type cacheRun struct {
	// attrs is the target or source as sent.
	attrs string
	// out is the request's outcome (Exported, Imported or CacheFailed).
	out client.Outcome
}

// err is the run's failure, nil if it ended well.
func (r cacheRun) err() error {
	if err := r.out.Err(); err != nil {
		return fmt.Errorf("%s: %w", r.attrs, err)
	}
	return nil
}

// newTable is the two-column layout of the commands' results.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// writeExported writes an export's result: the manifest descriptor as
// BuildKit's exporter response names it (cache.manifest), the counts, or
// the failure.
func writeExported(tw io.Writer, r cacheRun) {
	fmt.Fprintf(tw, "export\t%s\n", r.attrs)
	switch e := r.out.Exported; {
	case e != nil:
		writeDescriptor(tw, "cache.manifest", e.Manifest)
		fmt.Fprintf(tw, "records\t%d\n", e.Records)
		fmt.Fprintf(tw, "layers\t%d\n", e.Layers)
		fmt.Fprintf(tw, "written\t%d\n", e.Written)
		fmt.Fprintf(tw, "existed\t%d\n", e.Existed)
		fmt.Fprintf(tw, "mounted\t%d\n", e.Mounted)
		if e.Warning != "" {
			fmt.Fprintf(tw, "warning\t%s\n", e.Warning)
		}
	case r.out.CacheFailed != nil:
		fmt.Fprintf(tw, "result\tfailed: %s\n", r.out.CacheFailed.Reason)
	}
}

// writeDescriptor writes desc as JSON after label, when it names a blob.
func writeDescriptor(tw io.Writer, label string, desc ocispec.Descriptor) {
	if desc.Digest != "" {
		m, _ := json.Marshal(desc)
		fmt.Fprintf(tw, "%s\t%s\n", label, m)
	}
}

// writeImported writes an import's result: the manifest, its media type,
// how many records went into the cache index, the dropped results, and
// a warning (a missing local cache), or the failure.
func writeImported(tw io.Writer, r cacheRun) {
	fmt.Fprintf(tw, "import\t%s\n", r.attrs)
	switch im := r.out.Imported; {
	case im != nil:
		writeDescriptor(tw, "manifest", im.Manifest)
		if im.MediaType != "" {
			fmt.Fprintf(tw, "media type\t%s\n", im.MediaType)
		}
		fmt.Fprintf(tw, "records\t%d imported\n", len(im.Records))
		fmt.Fprintf(tw, "dropped\t%d\n", im.Dropped)
		if im.Warning != "" {
			fmt.Fprintf(tw, "warning\t%s\n", im.Warning)
		}
	case r.out.CacheFailed != nil:
		fmt.Fprintf(tw, "result\tfailed: %s\n", r.out.CacheFailed.Reason)
	}
}

// cacheCommand is what export-cache and import-cache share: the fleet
// command's flags and --progress.
type cacheCommand struct{ fleetCommand }

func (c *cacheCommand) register(cmd *cobra.Command) {
	c.fleetCommand.register(cmd, "print the outcome as JSON", 30*time.Minute)
	c.registerProgress(cmd)
}

// print writes the outcome (as JSON with --json) after the build line,
// and returns the run's failure.
func (c *cacheCommand) print(g *globals, r cacheRun, write func(io.Writer, cacheRun)) error {
	if c.asJSON {
		if err := json.NewEncoder(g.stdout).Encode(r.out); err != nil {
			return err
		}
	} else {
		tw := newTable(g.stdout)
		fmt.Fprintf(tw, "build\t%s\n", r.out.BuildID)
		write(tw, r)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return r.err()
}

// run is what export-cache and import-cache do once their flags are read:
// open the display (titled title) and, within --timeout, the fleet; send
// the request, reporting its events; print the outcome with write. A cache
// build that ran and failed is printed and returned; any other error, or
// an outcome with no build (send failed before it had one), is returned
// unprinted.
func (c *cacheCommand) run(cmd *cobra.Command, g *globals, title, attrs string, write func(io.Writer, cacheRun),
	send func(ctx context.Context, f *fleet, each func(events.Event)) (client.Outcome, error)) error {
	show, err := newDisplay(c.progress, title, g.stderr)
	if err != nil {
		return err
	}
	return c.open(cmd, g, func(ctx context.Context, f *fleet) error {
		out, err := send(ctx, f, show.event)
		show.done()
		var buildErr *client.BuildError
		if err != nil && (!errors.As(err, &buildErr) || out.BuildID == "") {
			return err
		}
		return c.print(g, cacheRun{attrs: attrs, out: out}, write)
	})
}

func newExportCache(g *globals) *cobra.Command {
	var (
		c     cacheCommand
		src   sourceFlags
		build string
		to    string
	)
	cmd := &cobra.Command{
		Use:   "export-cache (--build ID | REF...) --to ATTRS",
		Short: "Write a BuildKit remote cache of a build's results, or of images already in the cache index",
		Long: `export-cache writes a BuildKit remote cache to a local OCI layout or a registry
repository. --to takes buildctl's --export-cache syntax:

  type=local,dest=DIR[,tag=T]
  type=registry,ref=host/repo:tag

with mode, image-manifest, oci-mediatypes, compression, force-compression,
ignore-error and registry.insecure. With --build it exports the results of
that build (the keys its cache hits and snapshots name), and its events go
on that build, so "stevedore watch ID" shows them. With REF... it resolves
each image first and exports what the cache index holds for it (pull it
before). It prints the cache manifest's descriptor (cache.manifest), the
records and layers written, and how many blobs were written, already there
or mounted from another repository.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (build == "") == (len(args) == 0) {
				return errors.New("name a build (--build ID) or images (REF...), one of the two")
			}
			target, err := exportTarget(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			ops := make([]events.SourceOp, 0, len(args))
			for _, ref := range args {
				op, err := src.op(ref)
				if err != nil {
					return err
				}
				ops = append(ops, op)
			}
			return c.run(cmd, g, "Exporting cache", target, writeExported, func(ctx context.Context, f *fleet, each func(events.Event)) (client.Outcome, error) {
				req := events.CacheExportRequested{Target: target, Build: build}
				buildID := build
				if buildID == "" {
					buildID = client.NewBuildID()
					keys, err := resultKeys(ctx, f, ops, each)
					if err != nil {
						return client.Outcome{}, err
					}
					req.Keys = keys
				}
				return client.ExportCache(ctx, f.js, buildID, req, each)
			})
		},
	}
	c.register(cmd)
	src.register(cmd)
	cmd.Flags().StringVar(&build, "build", "", "export the results of this build")
	cmd.Flags().StringVar(&to, "to", "", "where and how: buildctl's --export-cache attributes (type=local,dest=DIR or type=registry,ref=REF)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// resultKeys resolves each source and returns the solver digests of what
// the cache index holds for it: the key that hit and every key its record
// is stored under. A source whose keys all miss has nothing to export.
func resultKeys(ctx context.Context, f *fleet, ops []events.SourceOp, each func(events.Event)) ([]digest.Digest, error) {
	var keys []digest.Digest
	for _, op := range ops {
		out, err := client.Resolve(ctx, f.js, client.NewBuildID(), op, each)
		var buildErr *client.BuildError
		if errors.As(err, &buildErr) {
			return nil, fmt.Errorf("%s: %w", op.Identifier, err)
		}
		if err != nil {
			return nil, err
		}
		if out.Hit == nil {
			return nil, fmt.Errorf("%s: no result in the cache index (pull it first)", op.Identifier)
		}
		keys = append(keys, out.Hit.Key.Digest)
		keys = append(keys, out.Hit.Record.Digests...)
	}
	return keys, nil
}

func newImportCache(g *globals) *cobra.Command {
	var (
		c    cacheCommand
		from string
	)
	cmd := &cobra.Command{
		Use:   "import-cache --from ATTRS",
		Short: "Read a BuildKit remote cache into the cache index",
		Long: `import-cache reads a BuildKit remote cache (image manifest, index or inline
form) and puts its records into the cache index, with where their blobs
are: later resolves of the same images hit, and their pulls unpack the
cache's blobs. --from takes buildctl's --import-cache syntax:

  type=local,src=DIR[,tag=T|digest=D]
  type=registry,ref=host/repo:tag

It prints the manifest, its media type, how many records were imported and
how many results were dropped. A missing local cache is a warning, as in
BuildKit, not a failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			source, err := importSource(from)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			return c.run(cmd, g, "Importing cache", source, writeImported, func(ctx context.Context, f *fleet, each func(events.Event)) (client.Outcome, error) {
				return client.ImportCache(ctx, f.js, client.NewBuildID(), events.CacheImportRequested{Source: source}, each)
			})
		},
	}
	c.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "where: buildctl's --import-cache attributes (type=local,src=DIR or type=registry,ref=REF)")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}
