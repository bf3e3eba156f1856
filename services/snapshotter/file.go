package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// fileFiller writes the one file of a file snapshot, as BuildKit's blob
// and http sources make it: its content from the first location that has
// it (or its URL), verified against its digest and size, with its name,
// mode, owner and mtime (the Unix epoch unless given).
func (h *Handler) fileFiller(fc *events.FileContent) (filler, error) {
	name := fc.Name
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return nil, bus.Invalid(fmt.Errorf("file snapshot: invalid file name %q", name))
	}
	if err := fc.Digest.Validate(); err != nil {
		return nil, bus.Invalid(fmt.Errorf("file snapshot: digest: %w", err))
	}
	if len(fc.Locations) == 0 && fc.URL == "" {
		return nil, bus.Invalid(errors.New("file snapshot: no location and no URL to read the file from"))
	}
	if fc.Perm < 0 || fc.Perm > 0o7777 {
		return nil, bus.Invalid(fmt.Errorf("file snapshot: invalid mode %o", fc.Perm))
	}
	mode := os.FileMode(uint32(fc.Perm)) & os.ModePerm
	mtime := time.Unix(0, 0)
	if fc.ModTime != nil {
		mtime = *fc.ModTime
	}
	return func(ctx context.Context, dir string) error {
		rc, err := h.openFile(ctx, fc)
		if err != nil {
			return err
		}
		defer func() { _ = rc.Close() }()
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode) //nolint:gosec // G304: a name of one path element inside the snapshot
		if err != nil {
			return err
		}
		v := fc.Digest.Algorithm().Digester()
		limit := fc.Size
		if limit < 0 {
			limit = 1 << 40
		}
		n, err := io.Copy(io.MultiWriter(f, v.Hash()), io.LimitReader(rc, limit+1))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("file snapshot %s: %w", name, err)
		}
		if got := v.Digest(); got != fc.Digest {
			// BuildKit's text; the URL, or the file's name for a blob.
			what := fc.URL
			if what == "" {
				what = name
			}
			return bus.Invalid(fmt.Errorf("digest mismatch for %s: %s (expected: %s)", what, got, fc.Digest))
		}
		if fc.Size >= 0 && n != fc.Size {
			return bus.Invalid(fmt.Errorf("size mismatch for %s: %d bytes (expected: %d)", name, n, fc.Size))
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			return err
		}
		if os.Geteuid() == 0 || fc.UID != 0 || fc.GID != 0 {
			if err := os.Lchown(path, int(fc.UID), int(fc.GID)); err != nil {
				return fmt.Errorf("file snapshot %s: %w", name, err)
			}
		}
		return os.Chtimes(path, mtime, mtime)
	}, nil
}

// openFile opens a file's content: from its blob locations, or from its
// URL.
func (h *Handler) openFile(ctx context.Context, fc *events.FileContent) (io.ReadCloser, error) {
	if len(fc.Locations) > 0 {
		rc, _, err := h.reader.Open(ctx, fc.Locations, ocispec.Descriptor{Digest: fc.Digest, Size: fc.Size})
		if err == nil || fc.URL == "" {
			return rc, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fc.URL, nil)
	if err != nil {
		return nil, bus.Invalid(fmt.Errorf("file snapshot: %w", err))
	}
	for _, hd := range fc.Headers {
		req.Header.Set(hd.Name, hd.Value)
	}
	// Go's client drops the header on a redirect to another host.
	header, err := h.authorization(ctx, fc.Auth)
	if err != nil {
		return nil, err
	}
	if header != "" {
		req.Header.Set("Authorization", header)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return nil, bus.Unavailable(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		_ = resp.Body.Close()
		return nil, &source.StatusError{Status: resp.StatusCode}
	}
	return resp.Body, nil
}
