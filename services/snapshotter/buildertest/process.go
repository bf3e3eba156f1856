package buildertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a daemon has between SIGTERM and SIGKILL.
const stopGrace = 15 * time.Second

// Process is a daemon a test started.
type Process struct {
	// Name is what the logs call it.
	Name string
	// Log is the file its standard output and error go to.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts name with args as a daemon, its output in a log file in the
// test's temporary directory, and stops it by its pid when the test ends
// (SIGTERM, SIGKILL after a grace period). When the test failed, the end of
// its log is printed.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	// Not CommandContext: the process outlives the test's context until
	// Stop, which signals this pid only.
	cmd := exec.Command(name, args...) //nolint:noctx // stopped by pid in Stop
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: filepath.Base(name), Log: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s (pid %d) log:\n%s", p.Name, p.Pid(), p.Tail(6000))
		}
	})
	return p
}

// Pid is the daemon's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited returns a channel closed when the daemon has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the daemon's pid, SIGKILL after the grace period,
// and waits for it to exit. It is safe to call more than once.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Tail returns the last n bytes of the daemon's log.
func (p *Process) Tail(n int) string {
	data, _ := os.ReadFile(p.Log)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// failure describes why the daemon is not usable: its exit, if it exited,
// and the end of its log.
func (p *Process) failure() error {
	select {
	case <-p.done:
		err := p.err
		if err == nil {
			err = errors.New("exit status 0")
		}
		return fmt.Errorf("%s exited: %w; its log ends:\n%s", p.Name, err, p.Tail(4000))
	default:
		return fmt.Errorf("%s's log ends:\n%s", p.Name, p.Tail(4000))
	}
}

// WaitSocket waits until socket accepts connections, the daemon exits or
// timeout passes.
func (p *Process) WaitSocket(ctx context.Context, socket string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", socket)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("waiting for %s: %w", socket, p.failure())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", socket, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s within %s: %w", p.Name, socket, timeout, p.failure())
		}
	}
}
