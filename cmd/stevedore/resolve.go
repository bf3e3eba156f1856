package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/broker"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/service"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// sourceFlags turn a command's REF and flags into a source op.
type sourceFlags struct {
	platform    string
	resolveMode string
	layerLimit  int
	checksum    string
	tagMaxAge   string
	attrs       []string
	// layouts are --oci-layout (oci.go).
	layouts layoutFlags
	// secrets are --secret (secret.go).
	secrets secretFlags
	// localDir is the absolute directory of a REF that is a local path
	// (op), served in the command's session; empty otherwise.
	localDir string
}

// localName is the name a local path REF is served under: the build
// context's, as in BuildKit's Dockerfile frontend.
const localName = "context"

// isLocalPath reports whether a REF without "://" names a directory of
// this machine rather than an image: ".", "..", or a path starting with
// "/", "./" or "../".
func isLocalPath(ref string) bool {
	return ref == "." || ref == ".." || strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../")
}

func (f *sourceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.platform, "platform", "", "platform to resolve for, e.g. linux/arm64 (default: the fleet's)")
	cmd.Flags().StringVar(&f.resolveMode, "resolve-mode", "", "image.resolvemode: default, pull or local")
	cmd.Flags().IntVar(&f.layerLimit, "layer-limit", 0, "image.layerlimit: use only the first N layers (0: all)")
	cmd.Flags().StringVar(&f.checksum, "checksum", "", "image.checksum: the digest the reference must resolve to")
	cmd.Flags().StringVar(&f.tagMaxAge, "tag-max-age", "", "image.tagmaxage: how old the fleet's memory of the tag may be to answer (0: ask the registry); only fresher than the fleet's --tag-max-age, never staler (default: the fleet's)")
	cmd.Flags().StringArrayVar(&f.attrs, "attr", nil, "raw BuildKit attribute key=value (repeatable)")
	f.layouts.register(cmd)
	f.secrets.register(cmd)
}

// op builds the source op for ref. A ref without "://" is a local
// directory when it is a path (isLocalPath: local://context, served by the
// command's session), and otherwise an image name, normalised the way
// BuildKit's client does (alpine becomes
// docker-image://docker.io/library/alpine:latest); an identifier with a
// scheme is sent as written.
func (f *sourceFlags) op(ref string) (events.SourceOp, error) {
	op := events.SourceOp{Identifier: ref, Attrs: map[string]string{}}
	switch {
	case source.IsGitURL(ref):
		// A URL with its transport: what llb.Git sends, an identifier
		// without transport and the URL as git.fullurl.
		g, err := source.ParseLLBGit(ref)
		if err != nil {
			return op, fmt.Errorf("%s: %w", ref, err)
		}
		op.Identifier = g.Identifier
		op.Attrs[source.AttrFullRemoteURL] = g.FullURL
	case strings.Contains(ref, "://"):
	case isLocalPath(ref):
		dir, err := filepath.Abs(ref)
		if err != nil {
			return op, err
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return op, fmt.Errorf("%s: not a directory", ref)
		}
		f.localDir = dir
		op.Identifier = source.SchemeLocal + "://" + localName
	default:
		named, err := source.NormalizeImageRef(ref)
		if err != nil {
			return op, fmt.Errorf("%s: %w", ref, err)
		}
		op.Identifier = source.SchemeDockerImage + "://" + named
	}
	if f.platform != "" {
		p, err := service.Platform(f.platform)
		if err != nil {
			return op, fmt.Errorf("--platform: %w", err)
		}
		op.Platform = &p
	}
	if f.resolveMode != "" {
		op.Attrs[source.AttrImageResolveMode] = f.resolveMode
	}
	if f.layerLimit != 0 {
		key := source.AttrImageLayerLimit
		if strings.HasPrefix(op.Identifier, source.SchemeOCILayout+"://") {
			key = source.AttrOCILayoutLayerLimit
		}
		op.Attrs[key] = strconv.Itoa(f.layerLimit)
	}
	if f.checksum != "" {
		op.Attrs[source.AttrImageChecksum] = f.checksum
	}
	if f.tagMaxAge != "" {
		op.Attrs[source.AttrImageTagMaxAge] = f.tagMaxAge
	}
	if strings.HasPrefix(op.Identifier, source.SchemeGit+"://") {
		// The secret names BuildKit's LLB client gives every git source;
		// --attr may name others.
		op.Attrs[source.AttrAuthTokenSecret] = source.DefaultGitAuthTokenSecret
		op.Attrs[source.AttrAuthHeaderSecret] = source.DefaultGitAuthHeaderSecret
	}
	for _, kv := range f.attrs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return op, fmt.Errorf("--attr %q: want key=value", kv)
		}
		op.Attrs[k] = v
	}
	if len(op.Attrs) == 0 {
		op.Attrs = nil
	}
	return op, nil
}

// namedSource is the source a command line names: its op, and what the
// build's session serves for it.
type namedSource struct {
	op       events.SourceOp
	layouts  []layoutSpec
	secrets  secret.Map
	localDir string
}

// parse reads the source flags and the REF argument.
func (f *sourceFlags) parse(args []string) (namedSource, error) {
	layouts, err := f.layouts.parse()
	if err != nil {
		return namedSource{}, err
	}
	secrets, err := f.secrets.parse()
	if err != nil {
		return namedSource{}, err
	}
	r, err := ref(args, layouts)
	if err != nil {
		return namedSource{}, err
	}
	op, err := f.op(r)
	if err != nil {
		return namedSource{}, err
	}
	return namedSource{op: op, layouts: layouts, secrets: secrets, localDir: f.localDir}, nil
}

// fleet is a JetStream connection to a running fleet or to an embedded
// stack started for one call.
type fleet struct {
	js    jetstream.JetStream
	close func()
	// stack is the embedded stack; nil with --nats.
	stack *stack
	// dataDir is the embedded stack's data dir.
	dataDir string
	// served is the session serving the command's --oci-layout, local
	// directory and --secret: the build's session; nil without any.
	served *clientSession
}

// connectFleet connects to --nats, or starts an embedded stack in
// sf.dataDir (a temporary one when empty).
func connectFleet(ctx context.Context, g *globals, sf *serviceFlags) (*fleet, error) {
	dataDir := sf.dataDir
	if g.natsURL != "" {
		nc, js, err := dial(ctx, g.natsURL, "stevedore-cli")
		if err != nil {
			return nil, err
		}
		return &fleet{js: js, close: nc.Close}, nil
	}
	cleanup := func() {}
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "stevedore-")
		if err != nil {
			return nil, err
		}
		dataDir, cleanup = dir, func() { _ = os.RemoveAll(dir) }
	}
	cfg, err := sf.stackConfig(g, broker.Config{DataDir: dataDir, NoListen: true})
	if err != nil {
		cleanup()
		return nil, err
	}
	s, err := startStack(ctx, cfg)
	if errors.Is(err, broker.ErrLocked) || errors.Is(err, snapshot.ErrLocked) {
		cleanup()
		return nil, fmt.Errorf("%w: is \"stevedore up\" running on %s? Talk to it with --nats, or use another --data-dir", err, dataDir)
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	_, js, err := s.connect("stevedore-cli")
	if err != nil {
		s.close()
		cleanup()
		return nil, err
	}
	return &fleet{js: js, close: func() { s.close(); cleanup() }, stack: s, dataDir: dataDir}, nil
}

func newResolve(g *globals) *cobra.Command {
	var c buildCommand
	cmd := &cobra.Command{
		Use:   "resolve REF",
		Short: "Compute a source's BuildKit cache keys and look them up",
		Long: `resolve starts a build for REF (an image name, or an identifier with its
scheme) and prints its index-0 and index-1 cache keys, their solver digests,
the pin, and whether the cache index had them. With --nats it asks a running
fleet; without, it starts the embedded stack for this one call.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.run(cmd, g, args, func(ctx context.Context, f *fleet, op events.SourceOp) error {
				out, err := client.Run(ctx, f.js, c.buildID, events.SourceResolveRequested{Source: op, Session: f.served.id()}, nil)
				var buildErr *client.BuildError
				if err != nil && !errors.As(err, &buildErr) {
					return err
				}
				if c.asJSON {
					return json.NewEncoder(g.stdout).Encode(out)
				}
				printOutcome(g.stdout, out)
				f.served.print(g.stdout)
				if buildErr != nil {
					return fmt.Errorf("%s: %w", op.Identifier, buildErr)
				}
				return nil
			})
		},
	}
	c.register(cmd, "print the outcome as JSON", 2*time.Minute)
	return cmd
}

func printOutcome(w io.Writer, out client.Outcome) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "build\t%s\n", out.BuildID)
	if out.Source.Identifier != "" {
		fmt.Fprintf(tw, "source\t%s\n", out.Source.Identifier)
		fmt.Fprintf(tw, "platform\t%s\n", platformOf(out.Source))
	}
	if out.Pin != "" {
		fmt.Fprintf(tw, "pin\t%s\n", out.Pin)
	}
	for _, k := range out.Keys {
		if k.Stale != "" {
			fmt.Fprintf(tw, "stale\t%s\n", k.Stale)
			break
		}
	}
	for _, k := range out.Keys {
		state := "miss"
		if out.Hit != nil && out.Hit.Key.Index == k.Index {
			state = "hit"
		}
		fmt.Fprintf(tw, "index %d\t%s\t(solver digest %s)\t%s\n", k.Index, k.Key, k.Digest, state)
	}
	if w := platformWarning(out); w != "" {
		fmt.Fprintf(tw, "warning\t%s\n", w)
	}
	switch {
	case out.Hit != nil && out.Hit.Snapshot && out.Snapshot != nil:
		fmt.Fprintf(tw, "result\tcache hit at index %d in an imported cache; snapshot made from it\n", out.Hit.Key.Index)
	case out.Hit != nil && out.Hit.Snapshot && out.SnapshotFailed != nil:
		fmt.Fprintf(tw, "result\tcache hit at index %d in an imported cache; snapshot failed: %s\n", out.Hit.Key.Index, out.SnapshotFailed.Reason)
	case out.Hit != nil && out.Hit.Record.Lazy():
		fmt.Fprintf(tw, "result\tcache hit at index %d in an imported cache: chainID %s, blobs in %s\n", out.Hit.Key.Index, out.Hit.Record.ChainID, locations(out.Hit.Record.Locations))
	case out.Hit != nil && out.Hit.Record.ChainID == "":
		fmt.Fprintf(tw, "result\tcache hit at index %d: snapshot %s, node %s\n", out.Hit.Key.Index, out.Hit.Record.SnapshotKey, orNone(out.Hit.Record.Node))
	case out.Hit != nil:
		fmt.Fprintf(tw, "result\tcache hit at index %d: chainID %s, node %s\n", out.Hit.Key.Index, out.Hit.Record.ChainID, orNone(out.Hit.Record.Node))
	case out.Miss != nil:
		fmt.Fprintf(tw, "result\tcache miss: %s\n", toFetch(out.Miss.Source, out.Miss.CacheOpts))
	case out.Failed != nil:
		fmt.Fprintf(tw, "result\tfailed: %s\n", out.Failed.Reason)
	}
}

func locations(locs []events.BlobLocation) string {
	if len(locs) == 0 {
		return "(nowhere)"
	}
	parts := make([]string, len(locs))
	for i, l := range locs {
		parts[i] = l.String()
	}
	return strings.Join(parts, ", ")
}
