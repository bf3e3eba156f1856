//go:build unix

package brokertest

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// lockFile is the file whose flock StartCluster holds while its cluster
// runs, in the machine's temp dir: every test binary (each package's, as
// go test runs them side by side) takes the same one.
const lockFile = "stevedore-brokertest-cluster.lock"

// exclusive waits until no other cluster of this package runs on the
// machine, in any process, and keeps it so until the end of the test.
// Three nodes replicating every write, with second-long leases and
// AckWaits, are what a loaded machine schedules late; two clusters at
// once made that the normal case.
func exclusive(t testing.TB) error {
	t.Helper()
	path := filepath.Join(os.TempDir(), lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644) //nolint:gosec // G304: a fixed name in the temp dir
	if err != nil {
		return fmt.Errorf("open the cluster lock: %w", err)
	}
	began := time.Now()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return fmt.Errorf("lock %s: %w", path, err)
	}
	if waited := time.Since(began); waited > 100*time.Millisecond {
		t.Logf("waited %s for another test's cluster to stop", waited.Round(time.Millisecond))
	}
	// Closing the file releases the lock; this cleanup is registered
	// before the cluster's, so it runs after the nodes are shut down.
	t.Cleanup(func() { _ = f.Close() })
	return nil
}
