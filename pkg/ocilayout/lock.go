package ocilayout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Lock polling: flock cannot be interrupted by ctx, so locks are tried
// without blocking, sleeping between attempts, doubling from lockPollMin
// up to lockPollMax.
const (
	lockPollMin = time.Millisecond
	lockPollMax = 16 * time.Millisecond
)

// lockIndex takes the locks a writer of index.json holds, waiting while ctx
// allows, and returns the function that releases them:
//
//  1. An exclusive flock on the layout's root directory, which excludes
//     every other writer using this package. The directory is never
//     removed or replaced while the layout exists, so this lock cannot be
//     defeated; on a file system that cannot flock a directory (NFS) it is
//     skipped.
//  2. An exclusive flock on LockFile, the lock BuildKit's client takes, so
//     its writers are excluded too. BuildKit's client removes this file
//     after each use, which can let a lock taken on the removed file
//     exclude nobody; the directory lock keeps this package's writers
//     exclusive regardless, and lockFile narrows the window for BuildKit's.
func lockIndex(ctx context.Context, root, lockPath string) (unlock func(), err error) {
	unlockDir, err := lockDir(ctx, root)
	if err != nil {
		return nil, err
	}
	unlockFile, err := lockFile(ctx, lockPath)
	if err != nil {
		unlockDir()
		return nil, err
	}
	return func() { unlockFile(); unlockDir() }, nil
}

// lockDir takes an exclusive flock on the directory dir. When the file
// system refuses to flock a directory it takes nothing and returns a no-op.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.Open(dir) //nolint:gosec // G304: the layout root
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := waitLock(ctx, f); err != nil {
		_ = f.Close()
		if cause := context.Cause(ctx); cause != nil {
			return nil, fmt.Errorf("lock %s: %w", dir, cause)
		}
		return func() {}, nil // no directory locks here; LockFile alone
	}
	return func() { _ = f.Close() }, nil // closing releases the flock
}

// lockFile takes an exclusive flock on the file at path (creating it),
// waiting while ctx allows. After locking it checks that path still names
// the locked file (a holder that removed it after unlocking, as BuildKit's
// client does, leaves a waiter locking a file nobody else will open) and
// starts again with a fresh file when it does not.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, lockPerm) //nolint:gosec // G304: the layout root joined with a constant name
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var same bool
		if err = waitLock(ctx, f); err == nil {
			same, err = namesFile(path, f)
		}
		if err == nil && same {
			return func() { _ = f.Close() }, nil // closing releases the flock
		}
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
	}
}

// waitLock takes an exclusive flock on f, polling until it is free or ctx
// is done (then the error is ctx's cause).
func waitLock(ctx context.Context, f *os.File) error {
	delay := lockPollMin
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return os.NewSyscallError("flock", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		delay = min(2*delay, lockPollMax)
	}
}

// namesFile reports whether path still names the open file f.
func namesFile(path string, f *os.File) (bool, error) {
	held, err := f.Stat()
	if err != nil {
		return false, err
	}
	now, err := os.Stat(path) //nolint:gosec // G703: the layout root joined with a constant name
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(held, now), nil
}
