package ocilayout

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Bounds of the two small files of a layout: a layout may be a client's
// (an import source, an oci-layout source), so they are read only when
// they are regular files of at most this size.
const (
	// MaxLayoutFileSize bounds oci-layout.
	MaxLayoutFileSize = 64 << 10
	// MaxIndexSize bounds index.json.
	MaxIndexSize = 8 << 20
)

// readSmallFile reads the regular file p of at most limit bytes. It never
// blocks on what is not a regular file (a FIFO, a device): the file is
// opened non-blocking and refused (ErrInvalid) unless regular, as is one
// larger than limit, before anything is read. A missing file is the
// os.Open error (fs.ErrNotExist).
func readSmallFile(p, name string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0) //nolint:gosec // G304: the layout root joined with a constant name
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s): %w", name, fi.Mode().Type(), ErrInvalid)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than %d: %w", name, fi.Size(), limit, ErrInvalid)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is more than %d bytes: %w", name, limit, ErrInvalid)
	}
	return data, nil
}
