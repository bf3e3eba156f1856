package buildertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stevedoreStartTimeout bounds how long `stevedore up` may take to serve
// its snapshots socket.
const stevedoreStartTimeout = 60 * time.Second

// Stevedore is a `stevedore up` a test started: the whole fleet in one
// process, with containerd's snapshots API on Socket.
type Stevedore struct {
	// Socket is the snapshots socket's path.
	Socket string
	// NATS is the embedded NATS server's client URL.
	NATS string
	// DataDir is its data directory.
	DataDir string
	// Process is the daemon.
	Process *Process
}

// built is the stevedore binary BuildStevedore built in this process.
var built struct {
	once sync.Once
	path string
	err  error
}

// BuildStevedore builds stevedore from this workspace (CGO_ENABLED=0, as
// make build does) into the repository's bin/buildertest/, once per test
// process, and returns its path.
func BuildStevedore(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			built.err = err
			return
		}
		bin := filepath.Join(root, "bin", "buildertest", "stevedore")
		// Not the test's context: the build is shared by every test of the
		// process, and the first one's end must not cancel it.
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/stevedore") //nolint:noctx // shared by the process's tests
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build stevedore: %w\n%s", err, out)
			return
		}
		built.path = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// RequireSnapshotsSocket skips the test (or fails it, with CI set) unless
// the stevedore binary bin has `up --snapshots-socket`: the snapshots API
// the builder tests run against.
func RequireSnapshotsSocket(t testing.TB, bin string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), bin, "up", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("stevedore up --help: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--snapshots-socket") {
		unavailable(t, "stevedore up has no --snapshots-socket: this build does not serve containerd's snapshots API")
	}
}

// StartStevedore starts `stevedore up --snapshots-socket` (bin from
// BuildStevedore) with a fresh data dir and a free loopback port, and
// waits until the snapshots socket listens.
func StartStevedore(t testing.TB, bin string) *Stevedore {
	t.Helper()
	RequireRoot(t)
	port := freePort(t)
	s := &Stevedore{
		Socket:  filepath.Join(SocketDir(t), "snapshots.sock"),
		NATS:    "nats://127.0.0.1:" + strconv.Itoa(port),
		DataDir: filepath.Join(t.TempDir(), "stevedore"),
	}
	s.Process = Start(t, bin, "up", "--log-level", "info",
		"--listen", "127.0.0.1:"+strconv.Itoa(port),
		"--data-dir", s.DataDir,
		"--snapshots-socket", s.Socket)
	if err := s.Process.WaitSocket(t.Context(), s.Socket, stevedoreStartTimeout); err != nil {
		t.Fatal(err)
	}
	return s
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	var lc net.ListenConfig
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
