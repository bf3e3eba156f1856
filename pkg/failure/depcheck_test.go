package failure_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The domain packages classify their errors with pkg/failure and never
// reach for the bus: they must not depend on pkg/bus nor on NATS, so a
// library user (the CLI, a test, another runtime) takes them without a
// broker. The linter's depguard rule "domain" says the same per file.
func TestDomainDependencies(t *testing.T) {
	t.Parallel()
	const module = "github.com/stevedore-dev/stevedore/pkg/"
	banned := func(dep string) bool {
		if strings.HasPrefix(dep, "github.com/nats-io/") {
			return true
		}
		for _, p := range []string{module + "bus", module + "broker", module + "session"} {
			if dep == p || strings.HasPrefix(dep, p+"/") {
				return true
			}
		}
		return false
	}
	for _, pkg := range []string{"failure", "source", "registry", "gitremote", "cachefmt", "image", "snapshot", "ocilayout", "lineage"} {
		t.Run(pkg, func(t *testing.T) {
			t.Parallel()
			for _, dep := range deps(t, module+pkg, "{{.ImportPath}}") {
				if banned(dep) {
					t.Errorf("pkg/%s depends on %s", pkg, dep)
				}
			}
		})
	}
}

// pkg/failure is the leaf every package imports: the standard library
// only.
func TestFailureIsALeaf(t *testing.T) {
	t.Parallel()
	const self = "github.com/stevedore-dev/stevedore/pkg/failure"
	for _, dep := range deps(t, self, "{{if not .Standard}}{{.ImportPath}}{{end}}") {
		if dep != self {
			t.Errorf("pkg/failure depends on %s, which is not in the standard library", dep)
		}
	}
}

// deps is go list -deps of pkg, one line per package in format.
func deps(t *testing.T, pkg, format string) []string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "-f", format, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pkg, err, out)
	}
	return strings.Fields(string(out))
}
