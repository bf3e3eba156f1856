package fleettest_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The workspace's modules require each other without a cycle: a service's
// tests that need a whole fleet live here (fleettest/puller,
// fleettest/snapshotter, fleettest/exporter), because this module requires
// every service and a service requiring it back would make each version of
// one depend on a version of the other.
func TestNoModuleCycle(t *testing.T) {
	t.Parallel()
	root := workspaceRoot(t)
	var work struct{ Use []struct{ DiskPath string } }
	goJSON(t, root, &work, "work", "edit", "-json", "go.work")
	requires := map[string][]string{}
	for _, use := range work.Use {
		var mod struct {
			Module  struct{ Path string }
			Require []struct{ Path string }
		}
		goJSON(t, filepath.Join(root, use.DiskPath), &mod, "mod", "edit", "-json")
		for _, r := range mod.Require {
			requires[mod.Module.Path] = append(requires[mod.Module.Path], r.Path)
		}
	}
	// Depth-first search; a module met again while still on the path closes
	// a cycle.
	const (
		unseen = iota
		onPath
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(m string)
	visit = func(m string) {
		switch state[m] {
		case onPath:
			i := len(path) - 1
			for path[i] != m {
				i--
			}
			t.Errorf("module cycle: %s -> %s", strings.Join(path[i:], " -> "), m)
			return
		case done:
			return
		}
		state[m] = onPath
		path = append(path, m)
		for _, r := range requires[m] {
			if _, ours := requires[r]; ours {
				visit(r)
			}
		}
		path = path[:len(path)-1]
		state[m] = done
	}
	for m := range requires {
		visit(m)
	}
	if len(requires) < 5 {
		t.Fatalf("read %d modules from go.work, want every module of the workspace", len(requires))
	}
}

// workspaceRoot is the nearest directory above the test holding go.work.
func workspaceRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test's directory")
		}
		dir = parent
	}
}

// goJSON runs a go subcommand that prints JSON in dir and decodes it into v.
func goJSON(t *testing.T, dir string, v any, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s in %s: %v", strings.Join(args, " "), dir, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("go %s in %s: %v", strings.Join(args, " "), dir, err)
	}
}
