package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// Main runs the command line and returns the exit code.
func Main() int {
	stopProfile, err := startCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	ctx, stop := signalContext(context.Background())
	defer stop()
	root := newRoot(os.Stdout, os.Stderr)
	err = errors.Join(root.ExecuteContext(ctx), stopProfile())
	var sig interrupted
	if errors.As(context.Cause(ctx), &sig) {
		// What the command says of its own interruption is noise; that it
		// was interrupted is all there is to say.
		fmt.Fprintln(os.Stderr, sig.Error())
		return sig.exitCode()
	}
	var shown shownError
	if errors.As(err, &shown) {
		fmt.Fprintf(os.Stderr, "error: %s failed (the reason is above)\n", shown.what)
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var exit exitError
		if errors.As(err, &exit) {
			return int(exit)
		}
		return 1
	}
	return 0
}

// shownError is a failure the progress display already showed with its
// reason: the last line names what failed without saying it again.
type shownError struct {
	what string
	err  error
}

func (e shownError) Error() string { return e.what + ": " + e.err.Error() }
func (e shownError) Unwrap() error { return e.err }

// exitError carries a specific exit code.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// globals are the flags every command has.
type globals struct {
	natsURL  string
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func (g *globals) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "stevedore",
		Short:         "BuildKit's source side as services on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.Version = currentBuild().String()
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.natsURL, "nats", os.Getenv("STEVEDORE_NATS_URL"),
		"NATS URL of a running fleet (STEVEDORE_NATS_URL); empty: start an embedded stack for the one call (resolve, pull, export-cache, import-cache) or use nats://127.0.0.1:4222 (watch)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "error", "log level of the services the command runs: debug, info, warn, error")
	root.AddCommand(newUp(g), newResolve(g), newPull(g), newExportCache(g), newImportCache(g), newWatch(g), newPrune(g), newExplain(g), newWatchTags(g))
	return root
}
