package snapshot

import (
	"archive/tar"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// ErrLimit reports that unpacking would go past one of the Limits: a
// layer or a snapshot bigger than allowed, with more entries than allowed,
// or a data dir about to run out of space. It is permanent: the same
// layers always expand to the same size (class failure.ErrInvalid).
var ErrLimit = failure.Invalid(errors.New("snapshot limit reached"))

// ErrBadLayer reports a layer whose blob is what its digest says but whose
// tar cannot be applied (truncated, a link or whiteout pointing out of the
// tree, an entry the extractor refuses): the same bytes always fail the
// same way, so it is permanent (class failure.ErrInvalid).
var ErrBadLayer = failure.Invalid(errors.New("layer cannot be unpacked"))

// LimitError is an ErrLimit: which limit, and its value.
type LimitError struct {
	// What names the limit and what reached it, for example "layer
	// sha256:… declares more than 17179869184 bytes".
	What string
}

func (e *LimitError) Error() string { return e.What }

// Is matches ErrLimit, and so its class failure.ErrInvalid.
func (e *LimitError) Is(target error) bool { return errors.Is(ErrLimit, target) }

// Limits bound what an Unpack may write, against a layer that expands far
// beyond its compressed size (a few MB of gzip declaring many GB, a tiny
// tar holding a huge sparse file) or holds millions of entries. Sizes are
// what the tar headers declare, so a sparse file counts at its full size
// and an entry over the limit is refused before a byte of it is written.
// A zero field is no limit.
type Limits struct {
	// LayerBytes is the most bytes the files of one layer may declare
	// (uncompressed); the layer's tar stream may be at most twice that
	// plus 64 MiB (headers).
	LayerBytes int64
	// LayerEntries is the most entries (files, directories, links,
	// whiteouts) one layer may hold.
	LayerEntries int64
	// SnapshotBytes is the most bytes a whole chain may declare: the layers
	// this Unpack extracts plus the recorded sizes of those already here.
	SnapshotBytes int64
	// SnapshotEntries is the most entries the layers one Unpack extracts
	// may hold together.
	SnapshotEntries int64
	// MinFreeBytes is the free-space floor of the data dir: extraction
	// stops before a file would leave less than this free.
	MinFreeBytes int64
}

// DefaultLimits are the limits of a snapshotter that sets none: layers of
// up to 16 GiB and a million entries, snapshots of up to 64 GiB and four
// million entries, and 1 GiB kept free in the data dir.
func DefaultLimits() Limits {
	return Limits{LayerBytes: 16 << 30, LayerEntries: 1 << 20, SnapshotBytes: 64 << 30, SnapshotEntries: 4 << 20, MinFreeBytes: 1 << 30}
}

// budget is what one Unpack has used of its Limits.
type budget struct {
	lim  Limits
	root string

	mu      sync.Mutex
	bytes   int64
	entries int64
}

// layerBudget counts one layer's entries against its budget.
type layerBudget struct {
	b       *budget
	layer   string
	bytes   int64
	entries int64
	// unchecked is what was declared since the last free-space check.
	unchecked int64
}

// freeCheckEvery is how many declared bytes may pass between two checks
// of the free space (a file this big or bigger is checked on its own).
const freeCheckEvery = 8 << 20

func (b *budget) forLayer(layer string) *layerBudget {
	if b == nil {
		return nil
	}
	return &layerBudget{b: b, layer: layer}
}

// filter is an archive filter: it counts hdr and refuses it (ErrLimit)
// when it would go past a limit.
func (l *layerBudget) filter(hdr *tar.Header) (bool, error) {
	size := max(hdr.Size, 0)
	l.entries++
	l.bytes += size
	lim := l.b.lim
	if lim.LayerEntries > 0 && l.entries > lim.LayerEntries {
		return false, &LimitError{What: fmt.Sprintf("layer %s holds more than %d entries (the snapshotter's layer entry limit)", l.layer, lim.LayerEntries)}
	}
	if lim.LayerBytes > 0 && l.bytes > lim.LayerBytes {
		return false, &LimitError{What: fmt.Sprintf("layer %s declares more than %d bytes (the snapshotter's layer size limit)", l.layer, lim.LayerBytes)}
	}
	l.b.mu.Lock()
	l.b.entries++
	l.b.bytes += size
	entries, bytes := l.b.entries, l.b.bytes
	l.b.mu.Unlock()
	if lim.SnapshotEntries > 0 && entries > lim.SnapshotEntries {
		return false, &LimitError{What: fmt.Sprintf("the snapshot's layers hold more than %d entries (the snapshotter's snapshot entry limit), at layer %s", lim.SnapshotEntries, l.layer)}
	}
	if lim.SnapshotBytes > 0 && bytes > lim.SnapshotBytes {
		return false, &LimitError{What: fmt.Sprintf("the snapshot's layers declare more than %d bytes (the snapshotter's snapshot size limit), at layer %s", lim.SnapshotBytes, l.layer)}
	}
	l.unchecked += size
	if lim.MinFreeBytes > 0 && (l.entries == 1 || l.unchecked >= freeCheckEvery || size >= freeCheckEvery) {
		l.unchecked = 0
		if err := l.b.checkFree(size); err != nil {
			return false, fmt.Errorf("layer %s: %w", l.layer, err)
		}
	}
	return true, nil
}

// streamLimit is the most bytes a layer's tar stream may hold: 0 for no
// limit.
func (l *layerBudget) streamLimit() int64 {
	if l == nil || l.b.lim.LayerBytes <= 0 {
		return 0
	}
	return 2*l.b.lim.LayerBytes + 64<<20
}

// checkFree fails when writing more bytes would leave less than the
// free-space floor in the data dir.
func (b *budget) checkFree(more int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.root, &st); err != nil {
		return fmt.Errorf("free space of the data dir: %w", err)
	}
	free := int64(st.Bavail) * int64(st.Bsize) //nolint:gosec // block counts and sizes fit an int64
	if free-more < b.lim.MinFreeBytes {
		return &LimitError{What: fmt.Sprintf("the data dir would have less than %d bytes free (the snapshotter's free-space floor): %d free, %d more to write", b.lim.MinFreeBytes, free, more)}
	}
	return nil
}

// nodeErrnos are the errors of this node's file system rather than of a
// layer: extraction that fails with one may succeed later.
var nodeErrnos = []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM}

// badLayer is the error of extracting the verified blob d: ErrBadLayer
// (permanent) unless the node's file system is the cause, with the
// snapshotter's paths (roots) taken out of its text.
func badLayer(d digest.Digest, err error, roots ...string) error {
	msg := fmt.Sprintf("extract %s: %s", d, err)
	for _, r := range roots {
		if r != "" {
			msg = strings.ReplaceAll(msg, r, "<layer>")
		}
	}
	for _, n := range nodeErrnos {
		if errors.Is(err, n) {
			return &layerError{msg: msg, causes: []error{err}}
		}
	}
	return &layerError{msg: msg, causes: []error{ErrBadLayer, err}}
}

// layerError is an extraction error whose text has no data-dir paths.
type layerError struct {
	msg    string
	causes []error
}

func (e *layerError) Error() string   { return e.msg }
func (e *layerError) Unwrap() []error { return e.causes }
