package puller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
)

// downloadsKeepFor is how long a kept download stays in the downloads
// layout: long enough for the snapshot that follows its key.
const downloadsKeepFor = time.Hour

// WithDownloads makes the handler keep what it downloads of http sources
// (to hash them) as blobs of the OCI image layout dir, and name that
// layout as the first location of the file a snapshotter makes: a
// snapshotter given the same directory (snapshotter.Config.Downloads: the
// same process, as in "stevedore up", or a volume shared at the same path)
// reads the file there, verified against the digest computed here, instead
// of downloading it a second time; one that is not, or that finds there no
// such file, downloads the URL.
// The bytes never travel through the bus. Blobs older than an hour are
// removed as new ones come. The default keeps nothing.
func WithDownloads(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("puller: WithDownloads: empty dir")
		}
		l, err := ocilayout.Open(dir)
		if err != nil {
			l, err = ocilayout.Create(dir)
		}
		if err != nil {
			return fmt.Errorf("puller: downloads layout: %w", err)
		}
		o.downloads = &downloads{dir: dir, layout: l}
		return nil
	}
}

// downloads is the layout of kept downloads.
type downloads struct {
	dir    string
	layout *ocilayout.Layout
}

// location is where a snapshotter looks for kept downloads.
func (d *downloads) location() events.BlobLocation { return events.BlobLocation{Layout: d.dir} }

// spool is a download being written to a temporary file while it is
// hashed.
type spool struct {
	f *os.File
}

// newSpool starts a temporary file in the layout's directory; nil when
// none can be made (the download is then only hashed).
func (d *downloads) newSpool() *spool {
	f, err := os.CreateTemp(d.dir, ".download-*")
	if err != nil {
		return nil
	}
	return &spool{f: f}
}

// writer is where the download's bytes go besides the hash.
func (s *spool) writer() io.Writer {
	if s == nil {
		return io.Discard
	}
	return s.f
}

// keep stores the spooled download as the blob desc names, and removes
// the temporary file; a failure only costs the second download.
func (d *downloads) keep(ctx context.Context, s *spool, desc ocispec.Descriptor) {
	if s == nil {
		return
	}
	defer func() {
		_ = s.f.Close()
		_ = os.Remove(s.f.Name())
	}()
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return
	}
	_, _ = d.layout.WriteBlob(ctx, desc, s.f)
	d.expire(time.Now().Add(-downloadsKeepFor))
}

// discard removes a spool whose download failed.
func (s *spool) discard() {
	if s == nil {
		return
	}
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// expire removes the blobs written before cutoff.
func (d *downloads) expire(cutoff time.Time) {
	root, err := os.OpenRoot(filepath.Join(d.dir, "blobs"))
	if err != nil {
		return
	}
	defer func() { _ = root.Close() }()
	_ = fs.WalkDir(root.FS(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil //nolint:nilerr // a blob that went meanwhile is no failure
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = root.Remove(p)
		}
		return nil
	})
}
