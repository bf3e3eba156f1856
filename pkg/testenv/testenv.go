// Package testenv is what a test says when this machine lacks something
// it needs: root, overlayfs, a tool on PATH. Such a test is skipped with
// the reason, except under CI (the CI environment variable set to
// anything): there it fails, so a green CI run never hides coverage
// behind a skip.
//
// Each check returns when the need is met; otherwise it ends the test
// (t.Skip or t.Fatal), so it is called from the test's own goroutine.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// EnvCI is the environment variable that marks a CI run. When it is set
// (to anything), a lack fails the test instead of skipping it.
const EnvCI = "CI"

// Lack ends t because this machine lacks what it needs, saying what and
// why: it fails t when EnvCI is set and skips it otherwise.
func Lack(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv(EnvCI) != "" {
		t.Fatalf("%s (%s is set: a test that cannot run here fails instead of skipping)", why, EnvCI)
	}
	t.Skip(why)
}

// Root requires the effective user to be root; why says what the test
// does that needs it.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Lack(t, "needs root: %s", why)
	}
}

// Tool returns the path of the executable name, found on PATH; why says
// what the test needs it for.
func Tool(t testing.TB, name, why string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Lack(t, "needs %s: %s: %v", name, why, err)
	}
	return p
}
