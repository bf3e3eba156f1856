package events_test

import (
	"os/exec"
	"strings"
	"testing"
)

// pkg/events is the contract every client and service shares; it must stay
// free of broker and runtime dependencies.
func TestDependencies(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "github.com/stevedore-dev/stevedore/pkg/events").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/nats-io/", "github.com/containerd/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("pkg/events depends on %s", dep)
			}
		}
	}
}
