package session_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The session protocols speak NATS themselves, but need nothing of the bus
// runtime: the build a reader works for comes from events.Input, and the
// error classes from pkg/failure.
func TestDependencies(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps",
		"github.com/stevedore-dev/stevedore/pkg/session",
		"github.com/stevedore-dev/stevedore/pkg/session/dirsync",
		"github.com/stevedore-dev/stevedore/pkg/session/output",
		"github.com/stevedore-dev/stevedore/pkg/session/secret").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/stevedore-dev/stevedore/pkg/bus" {
			t.Errorf("pkg/session depends on %s", dep)
		}
	}
}
