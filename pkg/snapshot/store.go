// Package snapshot unpacks image layers into a containerd snapshotter, the
// way BuildKit's GetByBlob and Extract do, but streamed and windowed.
//
// # Vocabulary
//
//   - A Store is one node's data dir: a containerd content store
//     (content/, the compressed blobs, kept for export) and a containerd
//     snapshotter (snapshots/<kind>/, overlayfs or native). One process owns
//     a data dir at a time (a lock file says so).
//   - A layer chain is a list of layers, bottom first; the chainID of its
//     first i layers names the committed snapshot holding them. Committed
//     snapshots are the only thing the Store ever trusts: a layer is
//     extracted into an active snapshot named extract-<random>-<chainID>,
//     and committed under its chainID only after the compressed digest and
//     size and the uncompressed diffID all verified.
//   - Unpack builds the snapshot of a chain: it reuses the deepest prefix
//     that already exists (dedupe by chainID, like GetByBlob), opens the
//     downloads of the missing layers one after the other in layer order
//     with at most Window bodies open, and extracts the layers in order
//     while later ones download (on overlayfs, several layers at once, each
//     without its parent, committed on it in order: containerd's rebase). The first missing layer, and any layer the
//     extractor reaches before its download started, is streamed in one
//     pass from the network through verification and decompression into
//     the snapshot, while its compressed bytes go into the content store.
//     A layer that fails to verify leaves neither snapshot nor blob behind.
//   - Extraction writes straight into the snapshot's directory (native: the
//     bind source; overlayfs: the upperdir, whiteouts converted), so it
//     needs no mount and no CAP_SYS_ADMIN.
//
// # Crash safety
//
// A process killed at any point leaves at most an active snapshot and an
// ingest in the content store, neither of which is ever read. Open removes
// both before anything else.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sync/singleflight"
)

// Kind is the snapshotter a Store uses.
type Kind string

// The snapshotter kinds.
const (
	// KindAuto picks overlayfs where the kernel and the filesystem allow it,
	// native otherwise.
	KindAuto Kind = "auto"
	// KindOverlay is containerd's overlayfs snapshotter: each layer its own
	// directory, nothing copied.
	KindOverlay Kind = "overlayfs"
	// KindNative is containerd's native snapshotter: each snapshot a full
	// copy of its parent plus the layer.
	KindNative Kind = "native"
)

// Well-known snapshot labels.
const (
	// LabelBlob names the compressed blob a committed snapshot's top layer
	// came from; prune keeps the blobs of the snapshots it keeps.
	LabelBlob = "dev.stevedore.snapshot.blob"
	// LabelDiffID is the uncompressed digest of the top layer (containerd's
	// own label name).
	LabelDiffID = "containerd.io/uncompressed"
	// activePrefix starts the name of every active (uncommitted) snapshot.
	activePrefix = "extract-"
)

// ErrLocked is returned by Open when another process owns the data dir.
var ErrLocked = errors.New("data dir is in use by another process")

// Store is one node's content store and snapshotter.
type Store struct {
	root string
	kind Kind
	cs   content.Store
	sn   snapshots.Snapshotter
	lock *os.File

	extracts singleflight.Group // by chainID
	mu       sync.Mutex
	inflight map[string]chan struct{} // blob digests being downloaded, closed when done
	commits  chan struct{}            // closed (and replaced) when an Unpack commits a snapshot
}

// Open opens (creating it if needed) the data dir root with a snapshotter of
// kind, takes its lock, and removes what a killed process may have left:
// its own extractions' active snapshots and unfinished ingests.
func Open(ctx context.Context, root string, kind Kind) (*Store, error) {
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(root, "lock"), os.O_CREATE|os.O_RDWR, 0o600) //nolint:gosec // G304: root is the operator's data dir
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("snapshot store %s: %w", root, ErrLocked)
	}
	// containerd's libraries log through logrus; its warnings (fsverity
	// support, say) are noise here.
	_ = log.SetLevel("error")
	s := &Store{root: root, lock: lock, inflight: map[string]chan struct{}{}, commits: make(chan struct{})}
	fail := func(err error) (*Store, error) {
		_ = s.Close()
		return nil, fmt.Errorf("snapshot store %s: %w", root, err)
	}
	if s.cs, err = local.NewStore(filepath.Join(root, "content")); err != nil {
		return fail(err)
	}
	if kind == "" {
		kind = KindAuto
	}
	if kind == KindAuto {
		kind = KindNative
		if overlaySupported(filepath.Join(root, "snapshots", string(KindOverlay))) {
			kind = KindOverlay
		}
	}
	switch kind {
	case KindOverlay:
		s.sn, err = newOverlay(filepath.Join(root, "snapshots", string(KindOverlay)))
	case KindNative:
		s.sn, err = native.NewSnapshotter(filepath.Join(root, "snapshots", string(KindNative)))
	default:
		err = fmt.Errorf("unknown snapshotter %q (want %s, %s or %s)", kind, KindAuto, KindOverlay, KindNative)
	}
	if err != nil {
		return fail(err)
	}
	s.kind = kind
	if err := s.recover(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// recover removes the leftovers of a process that died mid-work: the
// Store's own extractions (activePrefix), never anything else. Builders'
// active snapshots (containers' writable layers) and views survive a
// restart.
func (s *Store) recover(ctx context.Context) error {
	var active []string
	err := s.sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, activePrefix) {
			active = append(active, info.Name)
		}
		return nil
	})
	if err != nil && !errdefs.IsNotFound(err) { // an empty store has no bucket yet
		return fmt.Errorf("walk snapshots: %w", err)
	}
	for _, key := range active {
		if err := s.sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove leftover snapshot %s: %w", key, err)
		}
	}
	// Every ingest is a leftover (the lock keeps the dir to this process).
	// They go by path, not by ListStatuses and Abort: a process killed
	// between making an ingest's directory and its data file leaves one
	// ListStatuses fails the whole listing on. The content store makes
	// the directory again at its first write.
	if err := os.RemoveAll(filepath.Join(s.root, "content", "ingest")); err != nil {
		return fmt.Errorf("remove leftover ingests: %w", err)
	}
	return nil
}

// Kind is the snapshotter in use (never KindAuto).
func (s *Store) Kind() Kind { return s.kind }

// Root is the data dir.
func (s *Store) Root() string { return s.root }

// Content is the content store, for readers of the kept blobs.
func (s *Store) Content() content.Store { return s.cs }

// Snapshotter is the containerd snapshotter, for mounting views.
func (s *Store) Snapshotter() snapshots.Snapshotter { return s.sn }

// Close releases the snapshotter and the lock.
func (s *Store) Close() error {
	var errs []error
	if s.sn != nil {
		errs = append(errs, s.sn.Close())
	}
	if s.lock != nil {
		// Unlock before closing: a child forked by this process that has
		// not exec'd yet shares the lock's open file, and would hold the
		// lock until it execs if the close alone were to release it.
		errs = append(errs, syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN), s.lock.Close())
	}
	return errors.Join(errs...)
}
