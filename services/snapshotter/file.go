package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

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
		return nil, failure.Invalid(fmt.Errorf("file snapshot: invalid file name %q", name))
	}
	if err := fc.Digest.Validate(); err != nil {
		return nil, failure.Invalid(fmt.Errorf("file snapshot: digest: %w", err))
	}
	if len(fc.Locations) == 0 && fc.URL == "" {
		return nil, failure.Invalid(errors.New("file snapshot: no location and no URL to read the file from"))
	}
	if fc.Perm < 0 || fc.Perm > 0o7777 {
		return nil, failure.Invalid(fmt.Errorf("file snapshot: invalid mode %o", fc.Perm))
	}
	mode := os.FileMode(uint32(fc.Perm)) & os.ModePerm
	mtime := time.Unix(0, 0)
	if fc.ModTime != nil {
		mtime = *fc.ModTime
	}
	return func(ctx context.Context, dir string) error {
		path := filepath.Join(dir, name)
		if err := h.writeFile(ctx, fc, path, mode); err != nil {
			return err
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

// writeFile writes a file's content to path, verified against its digest
// and size: from its locations when one has it, else from its URL. A
// location's copy that fails the check (a kept download cut short or
// altered) is not used: the file is downloaded from its URL instead, or,
// without one, the check's failure is the error.
func (h *Handler) writeFile(ctx context.Context, fc *events.FileContent, path string, mode os.FileMode) error {
	if locations := h.fileLocations(fc); len(locations) > 0 {
		rc, _, err := h.reader.Open(ctx, locations, ocispec.Descriptor{Digest: fc.Digest, Size: fc.Size})
		if err == nil {
			err = copyVerified(fc, path, mode, rc)
			_ = rc.Close()
		}
		if err == nil || fc.URL == "" || context.Cause(ctx) != nil {
			return err
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return rerr
		}
	}
	if fc.URL == "" {
		return failure.Invalid(errors.New("file snapshot: no location this node reads and no URL to read the file from"))
	}
	rc, err := h.download(ctx, fc)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	return copyVerified(fc, path, mode, rc)
}

// fileLocations are the locations of a file this node reads: a layout
// only when it is the pullers' downloads directory (Config.Downloads), so
// an event cannot have it open another directory; the others (a session's
// store, a registry) as they are.
func (h *Handler) fileLocations(fc *events.FileContent) []events.BlobLocation {
	var out []events.BlobLocation
	for _, l := range fc.Locations {
		if l.Layout != "" && (h.downloads == "" || filepath.Clean(l.Layout) != h.downloads) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// copyVerified writes what r reads to a new file at path and checks it
// against fc's digest and size (BuildKit's text on a mismatch).
func copyVerified(fc *events.FileContent, path string, mode os.FileMode, r io.Reader) error {
	name := filepath.Base(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode) //nolint:gosec // G304: a name of one path element inside the snapshot
	if err != nil {
		return err
	}
	v := fc.Digest.Algorithm().Digester()
	limit := fc.Size
	if limit < 0 {
		limit = 1 << 40
	}
	n, err := io.Copy(io.MultiWriter(f, v.Hash()), io.LimitReader(r, limit+1))
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
		return failure.Invalid(fmt.Errorf("digest mismatch for %s: %s (expected: %s)", what, got, fc.Digest))
	}
	if fc.Size >= 0 && n != fc.Size {
		return failure.Invalid(fmt.Errorf("size mismatch for %s: %d bytes (expected: %d)", name, n, fc.Size))
	}
	return nil
}

// download opens a file's content at its URL, with its headers and
// credentials.
func (h *Handler) download(ctx context.Context, fc *events.FileContent) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fc.URL, nil)
	if err != nil {
		return nil, failure.Invalid(fmt.Errorf("file snapshot: %w", err))
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
		return nil, failure.Network(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		_ = resp.Body.Close()
		return nil, &source.StatusError{Status: resp.StatusCode}
	}
	return resp.Body, nil
}
