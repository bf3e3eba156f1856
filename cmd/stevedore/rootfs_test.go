package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestPlaceDir: a fill that fails leaves the destination as it was and
// nothing beside it; one that succeeds lands whole, into a missing, an
// empty or a non-empty destination.
func TestPlaceDir(t *testing.T) {
	t.Parallel()
	write := func(name, body string) func(context.Context, string) error {
		return func(_ context.Context, dir string) error {
			return os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600)
		}
	}
	failing := func(_ context.Context, dir string) error {
		if err := os.WriteFile(filepath.Join(dir, "half"), []byte("unverified"), 0o600); err != nil {
			return err
		}
		return errors.New("digest mismatch")
	}
	parent := t.TempDir()
	entries := func() []string {
		var names []string
		es, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}

	missing := filepath.Join(parent, "missing")
	if err := placeDir(t.Context(), missing, failing); err == nil {
		t.Fatal("a failing fill: no error")
	}
	if got := entries(); len(got) != 0 {
		t.Errorf("after a failed fill of a missing dir, the parent holds %v", got)
	}

	full := filepath.Join(parent, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "a"), []byte("old a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := placeDir(t.Context(), full, failing); err == nil {
		t.Fatal("a failing fill: no error")
	}
	if _, err := os.Stat(filepath.Join(full, "half")); err == nil {
		t.Error("a failed fill left a file in the destination")
	}
	if got := entries(); len(got) != 1 {
		t.Errorf("after a failed fill, the parent holds %v, want only full", got)
	}

	if err := placeDir(t.Context(), full, write("a", "new a")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a": "new a", "keep": "kept"} {
		if b, err := os.ReadFile(filepath.Join(full, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	if err := placeDir(t.Context(), missing, write("x", "x")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(missing, "x")); err != nil || string(b) != "x" {
		t.Errorf("x = %q, %v", b, err)
	}
	if fi, err := os.Stat(missing); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("new output dir: %v, %v; want mode 0755", fi, err)
	}
	if got := entries(); len(got) != 2 {
		t.Errorf("the parent holds %v, want full and missing only", got)
	}
}
