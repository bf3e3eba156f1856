package snapshot

import (
	"os"
	"os/exec"
	"testing"
)

// TestCloseReleasesTheLockAChildShares: a child process that shares the
// lock's open file (here passed on explicitly; in a real process, one
// forked and not yet exec'd) must not keep the data dir locked once the
// store is closed.
func TestCloseReleasesTheLockAChildShares(t *testing.T) {
	root := t.TempDir()
	s, err := Open(t.Context(), root, KindNative)
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	child := exec.CommandContext(t.Context(), sleep, "60")
	child.ExtraFiles = []*os.File{s.lock}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(t.Context(), root, KindNative)
	if err != nil {
		t.Fatalf("Open after Close while a child shares the lock's file: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}
