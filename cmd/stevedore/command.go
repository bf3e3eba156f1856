package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// fleetCommand is the shape of a command that talks to a fleet (resolve,
// pull, explain, export-cache, import-cache): the embedded stack's flags
// (--data-dir and the rest), --json and --timeout, and the fleet opened
// within that timeout.
type fleetCommand struct {
	sf      serviceFlags
	asJSON  bool
	timeout time.Duration
	// progress is --progress, on the commands that show one
	// (registerProgress).
	progress string
}

// register registers the flags: --json saying jsonUsage, --timeout
// defaulting to timeout.
func (c *fleetCommand) register(cmd *cobra.Command, jsonUsage string, timeout time.Duration) {
	c.sf.registerEmbedded(cmd)
	cmd.Flags().BoolVar(&c.asJSON, "json", false, jsonUsage)
	cmd.Flags().DurationVar(&c.timeout, "timeout", timeout, "give up after this long")
}

// registerProgress registers --progress.
func (c *fleetCommand) registerProgress(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.progress, "progress", progressAuto, "progress output: auto, tty, plain, rawjson (buildctl's SolveStatus JSON) or quiet")
}

// open connects to the fleet (--nats, or the embedded stack) within
// --timeout, calls do with it and closes it.
func (c *fleetCommand) open(cmd *cobra.Command, g *globals, do func(ctx context.Context, f *fleet) error) error {
	ctx, cancel := within(cmd, c.timeout)
	defer cancel()
	f, err := connectFleet(ctx, g, &c.sf)
	if err != nil {
		return err
	}
	defer func() { f.close() }() // as serve leaves it
	return do(ctx, f)
}

// buildCommand is a fleetCommand that starts a build of the source its
// REF names (resolve, pull): the source flags and --build-id too, and the
// build's session opened with the fleet.
type buildCommand struct {
	fleetCommand
	src sourceFlags
	// buildID is --build-id; run sets it to a new build id when empty.
	buildID string
}

// register registers the flags, as fleetCommand.register does.
func (c *buildCommand) register(cmd *cobra.Command, jsonUsage string, timeout time.Duration) {
	c.src.register(cmd)
	c.fleetCommand.register(cmd, jsonUsage, timeout)
	cmd.Flags().StringVar(&c.buildID, "build-id", "", "build id to use (default: a new one)")
}

// run reads the source REF (args) and its flags name, opens the fleet and
// the build's session serving what the source needs, and calls do with
// the source op (naming the session's stores).
func (c *buildCommand) run(cmd *cobra.Command, g *globals, args []string, do func(ctx context.Context, f *fleet, op events.SourceOp) error) error {
	named, err := c.src.parse(args)
	if err != nil {
		return err
	}
	return c.open(cmd, g, func(ctx context.Context, f *fleet) error {
		if c.buildID == "" {
			c.buildID = client.NewBuildID()
		}
		if err := f.serve(ctx, c.buildID, &named); err != nil {
			return err
		}
		return do(ctx, f, named.op)
	})
}

// serve opens the session of build buildID serving what src names (src.op
// then names the session's stores); the fleet's close stops the session
// first.
func (f *fleet) serve(ctx context.Context, buildID string, src *namedSource) error {
	served, err := serveSession(ctx, f.js.Conn(), buildID, src.layouts, src.localDir, src.secrets, &src.op)
	if err != nil {
		return err
	}
	f.served = served
	closeFleet := f.close
	f.close = func() {
		f.served.stop()
		closeFleet()
	}
	return nil
}

// dialRunning connects, as name, to the running fleet at --nats, or at
// nats://127.0.0.1:4222 where "stevedore up" listens, and waits until it
// is ready.
func dialRunning(ctx context.Context, g *globals, name string) (*nats.Conn, jetstream.JetStream, error) {
	url := g.natsURL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	return dial(ctx, url, name)
}

// dial connects, as name, to the fleet at url and waits until it is
// ready.
func dial(ctx context.Context, url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := bus.ConnectOnce(url, name, 5*time.Second, localCredentials(url)...)
	if err != nil {
		return nil, nil, err
	}
	if err := client.WaitReady(ctx, js, 5*time.Second); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// within is cmd's context, ended after timeout with "no answer within
// <timeout>".
func within(cmd *cobra.Command, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(cmd.Context(), timeout, fmt.Errorf("no answer within %s", timeout))
}
