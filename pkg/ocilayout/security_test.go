package ocilayout_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
)

// within runs f and fails the test when it has not returned after d; a
// read that blocks is unblocked afterwards by unblock.
func within(t *testing.T, d time.Duration, unblock func(), f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		unblock()
		err := <-done
		t.Fatalf("still reading after %s (then: %v)", d, err)
		return nil
	}
}

// unblockFIFO opens the FIFO at p for writing and closes it, so that a
// reader blocked in open or read sees its end.
func unblockFIFO(p string) func() {
	return func() {
		if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			_ = f.Close()
		}
	}
}

// Finding 6: an import's index.json and oci-layout were read with no size
// limit and without a way to stop: a FIFO held the reader (and an exporter
// slot) forever, a 1 GiB sparse index.json grew the process by 1 GiB. Both
// files are now refused unless regular and small, at once.
func TestSecurityLayoutFilesBounded(t *testing.T) {
	t.Parallel()
	t.Run("index.json FIFO", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		l, err := ocilayout.Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, ocilayout.IndexFile)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		err = within(t, 3*time.Second, unblockFIFO(p), func() error { _, err := l.Index(t.Context()); return err })
		if !errors.Is(err, ocilayout.ErrInvalid) {
			t.Errorf("Index of a FIFO index.json = %v, want ErrInvalid", err)
		}
	})
	t.Run("oci-layout FIFO", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		p := filepath.Join(dir, ocilayout.LayoutFile)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		err := within(t, 3*time.Second, unblockFIFO(p), func() error { _, err := ocilayout.Open(dir); return err })
		if !errors.Is(err, ocilayout.ErrInvalid) {
			t.Errorf("Open with a FIFO oci-layout = %v, want ErrInvalid", err)
		}
	})
	t.Run("sparse 1 GiB index.json", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		l, err := ocilayout.Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, ocilayout.IndexFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(1 << 30); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		err = within(t, 3*time.Second, func() {}, func() error { _, err := l.Index(t.Context()); return err })
		if !errors.Is(err, ocilayout.ErrInvalid) {
			t.Errorf("Index of a 1 GiB index.json = %v, want ErrInvalid", err)
		}
	})
}
