package ocilayout

import (
	"context"
	// The hash implementations go-digest needs for digest.SHA256, SHA384
	// and SHA512 to be available.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Well-known names of an OCI image layout.
const (
	// LayoutFile is the name of the file in a layout's root that marks it as
	// one and holds its version: {"imageLayoutVersion":"1.0.0"}.
	LayoutFile = ocispec.ImageLayoutFile
	// LayoutVersion is the only imageLayoutVersion this package reads and
	// writes.
	LayoutVersion = ocispec.ImageLayoutVersion
	// IndexFile is the name of the image index in a layout's root: the
	// layout's entry points, each tagged with AnnotationRefName.
	IndexFile = ocispec.ImageIndexFile
	// LockFile is the name of the file in a layout's root that writers of
	// IndexFile flock exclusively (BuildKit's client locks the same file,
	// IndexFile + ".lock"). It holds nothing.
	LockFile = IndexFile + ".lock"
	// BlobsDir is the name of the directory in a layout's root that holds
	// the blobs, one subdirectory per digest algorithm:
	// blobs/<algorithm>/<encoded>.
	BlobsDir = ocispec.ImageBlobsDir
)

// Index annotations.
const (
	// AnnotationRefName is the OCI annotation that tags an index entry
	// (org.opencontainers.image.ref.name). Tag sets it; Resolve matches it
	// after AnnotationContainerdImageName. BuildKit's local cache exporter
	// stores its tag here.
	AnnotationRefName = ocispec.AnnotationRefName
	// AnnotationContainerdImageName is containerd's annotation holding an
	// entry's full image name (io.containerd.image.name), written by
	// containerd's and BuildKit's image exporters next to
	// AnnotationRefName. Resolve matches it first, and Tag never replaces an
	// entry that carries it.
	AnnotationContainerdImageName = "io.containerd.image.name"
)

const (
	dirPerm   = 0o755 // directories: readable by other tools and users
	filePerm  = 0o644 // oci-layout and index.json
	blobPerm  = 0o444 // blobs are immutable
	lockPerm  = 0o600 // the lock file holds nothing anybody reads
	tmpPrefix = "."   // temporary files are dot-files, never taken for blobs
)

// Layout is an OCI image layout on disk. It holds only the root's path, so
// it is safe for concurrent use, and several values (in one process or
// many) may use the same directory.
type Layout struct {
	root string
}

// Create opens the layout at dir, making the directory, its blobs directory
// and its oci-layout file when they are missing. An existing oci-layout
// file is never replaced. index.json is not created here: it appears with
// the first Tag (until then Index reports an empty index).
//
// Errors: ErrInvalid when dir is empty or not a directory, or when an
// existing oci-layout file is malformed or has another version; otherwise
// the file system's error.
func Create(dir string) (*Layout, error) {
	if dir == "" {
		return nil, fmt.Errorf("create layout: empty path: %w", ErrInvalid)
	}
	l := &Layout{root: filepath.Clean(dir)}
	if fi, err := os.Stat(l.root); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("create layout %s: not a directory: %w", l.root, ErrInvalid)
	}
	if err := mkdirAll(l.root); err != nil {
		return nil, fmt.Errorf("create layout %s: %w", l.root, err)
	}
	if err := l.ensureLayoutFile(); err != nil {
		return nil, fmt.Errorf("create layout %s: %w", l.root, err)
	}
	if err := mkdirAll(l.path(BlobsDir)); err != nil {
		return nil, fmt.Errorf("create layout %s: %w", l.root, err)
	}
	return l, nil
}

// Open opens the existing layout at dir. It reads the oci-layout file and
// nothing else: a layout with no index.json (nothing tagged yet) or no
// blobs directory opens.
//
// Errors: ErrNotFound when dir or its oci-layout file does not exist;
// ErrInvalid when dir is empty or not a directory, or when oci-layout is
// malformed or has another version; otherwise the file system's error.
func Open(dir string) (*Layout, error) {
	if dir == "" {
		return nil, fmt.Errorf("open layout: empty path: %w", ErrInvalid)
	}
	l := &Layout{root: filepath.Clean(dir)}
	fi, err := os.Stat(l.root) //nolint:gosec // G703: the caller names the layout directory; opening it is the point
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open layout %s: %w", l.root, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("open layout %s: %w", l.root, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("open layout %s: not a directory: %w", l.root, ErrInvalid)
	}
	if err := l.checkLayoutFile(); err != nil {
		return nil, fmt.Errorf("open layout %s: %w", l.root, err)
	}
	return l, nil
}

// Root returns the layout's directory, cleaned (filepath.Clean) but not
// made absolute.
func (l *Layout) Root() string { return l.root }

// path joins names below the root.
func (l *Layout) path(names ...string) string {
	return filepath.Join(append([]string{l.root}, names...)...)
}

// checkLayoutFile reads oci-layout: ErrNotFound when it is absent,
// ErrInvalid when it is not LayoutVersion's.
func (l *Layout) checkLayoutFile() error {
	p := l.path(LayoutFile)
	data, err := readSmallFile(p, LayoutFile, MaxLayoutFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", LayoutFile, ErrNotFound)
	}
	if err != nil {
		return err
	}
	var v ocispec.ImageLayout
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("%s: %w: %w", LayoutFile, ErrInvalid, err)
	}
	if v.Version != LayoutVersion {
		return fmt.Errorf("%s: imageLayoutVersion %q, want %q: %w", LayoutFile, v.Version, LayoutVersion, ErrInvalid)
	}
	return nil
}

// ensureLayoutFile writes oci-layout unless a valid one exists. The file
// appears whole (written to a dot-file, then hard-linked into place), and
// the link fails rather than replace a file another process wrote
// meanwhile, which is then checked instead.
func (l *Layout) ensureLayoutFile() error {
	err := l.checkLayoutFile()
	if !errors.Is(err, ErrNotFound) {
		return err // nil for a valid file
	}
	data, err := json.Marshal(ocispec.ImageLayout{Version: LayoutVersion})
	if err != nil {
		return err
	}
	tmp, err := writeTemp(l.root, LayoutFile, data, filePerm)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }()
	err = os.Link(tmp, l.path(LayoutFile))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrExist):
		return l.checkLayoutFile()
	}
	// A file system without hard links: rename instead. Only a writer that
	// raced the check above can be overwritten, and one writing this
	// package's bytes loses nothing.
	return os.Rename(tmp, l.path(LayoutFile))
}

// checkContext returns the cause of ctx's cancellation, wrapped with what
// was being done, or nil while ctx is live.
func checkContext(ctx context.Context, doing string) error {
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	return nil
}
