package buildertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// unavailable skips the test saying why, or fails it when the environment
// variable CI is set: CI installs everything the builder tests need, so
// there a missing piece is a failure, never a silent skip.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: the builder tests must run here)", msg)
	}
	t.Skipf("%s; skipped (with CI set this fails)", msg)
}

// RequireRoot skips (or, with CI set, fails) the test unless it runs as
// root: buildkitd's OCI worker, containerd and overlayfs mounts need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "the builder tests need root (buildkitd's OCI worker, containerd and overlayfs mounts)")
	}
}

// Tool returns the path of an executable the builder tests run: the
// repository's bin/NAME (where `make builders` puts buildkitd and buildctl)
// or NAME on PATH. Without it the test is skipped, or fails with CI set.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	unavailable(t, "%s is not in bin/ nor on PATH (make builders builds buildkitd and buildctl and installs runc and containerd)", name)
	return ""
}

// RepoRoot returns the repository's top directory: the nearest parent of
// the working directory that holds go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

// SocketDir returns a new directory for unix sockets, short enough for
// their 107-byte limit, removed when the test ends.
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bt-") //nolint:usetesting // t.TempDir is too long a path for a socket
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
