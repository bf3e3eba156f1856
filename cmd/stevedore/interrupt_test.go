package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// scriptEnv are the variables of a script that a command interruptCmd
// starts gets.
var scriptEnv = []string{"PATH", "HOME", "TMPDIR", "WORK", "DOCKER_CONFIG", "XDG_DATA_HOME", "STEVEDORE_NATS_URL", "GOCOVERDIR"}

// interruptCmd is "interrupt CODE REGEXP stevedore ARGS...": it starts the
// command, sends it SIGINT once a line of its stdout or stderr matches
// REGEXP (so its handlers are in place), and fails unless it then exits
// with CODE. stdout holds the command's output, both streams merged.
// ctx kills the command when the test ends.
func interruptCmd(ctx context.Context) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) { interrupt(ctx, ts, neg, args) }
}

func interrupt(ctx context.Context, ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! interrupt")
	}
	if len(args) < 3 {
		ts.Fatalf("usage: interrupt CODE REGEXP command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	path := ""
	for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
		if p := filepath.Join(dir, args[2]); fileExists(p) {
			path = p
			break
		}
	}
	if path == "" {
		ts.Fatalf("interrupt: %s not in $PATH", args[2])
	}
	cmd := exec.CommandContext(ctx, path, args[3:]...)
	cmd.Dir = ts.MkAbs(".")
	for _, k := range scriptEnv {
		if v := ts.Getenv(k); v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	ts.Check(cmd.Start())
	var (
		out     strings.Builder
		mu      sync.Mutex
		matched = make(chan struct{})
		drained = make(chan struct{})
	)
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if re.MatchString(sc.Text()) {
				once.Do(func() { close(matched) })
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-matched:
		ts.Check(cmd.Process.Signal(syscall.SIGINT))
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
	}
	werr := cmd.Wait()
	_ = pw.Close()
	<-drained
	mu.Lock()
	output := out.String()
	mu.Unlock()
	ts.Logf("[output]\n%s", output)
	var exit *exec.ExitError
	code := 0
	if errors.As(werr, &exit) {
		code = exit.ExitCode()
	} else if werr != nil {
		ts.Fatalf("interrupt: %v", werr)
	}
	select {
	case <-matched:
	default:
		ts.Fatalf("interrupt: no line matched %q within 30s; killed it", args[1])
	}
	if code != want {
		ts.Fatalf("interrupt: %s exited %d after SIGINT, want %d", args[2], code, want)
	}
	_, _ = ts.Stdout().Write([]byte(output))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
