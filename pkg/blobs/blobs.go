// Package blobs reads blobs from the places a cache record says they are:
// registry repositories, OCI image layouts and the stores of client
// sessions (events.BlobLocation), tried in order.
//
// Vocabulary: a location is one place (a repository reference, a layout
// directory, or a store of a client session, pkg/session/store); a record's
// locations are ordered, an imported cache first and the origin last. Open returns the blob from the first location
// that has it; the caller verifies what it reads (digest and size), as with
// every other blob stream in Stevedore.
package blobs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// Registry opens blobs of a repository (a registry.Client).
type Registry interface {
	Open(ctx context.Context, ref string, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// Sessions opens blobs of the stores of client sessions (a
// *store.Client). A reader of a gone session fails with
// *session.NoSessionError, at Open or midway.
type Sessions interface {
	Open(ctx context.Context, id, store string, desc ocispec.Descriptor) (io.ReadCloser, error)
}

var _ Sessions = (*store.Client)(nil)

// ErrNoLocation is returned by Open when it is given no location, or one
// it cannot reach (a session location without Sessions).
var ErrNoLocation = errors.New("no location to read the blob from")

// Reader opens blobs at locations.
type Reader struct {
	reg      Registry
	sessions Sessions
}

// NewReader returns a Reader that reaches registries with reg. It reads
// no session location until WithSessions gives it a way to.
func NewReader(reg Registry) *Reader { return &Reader{reg: reg} }

// WithSessions returns a copy of r that opens session locations with s.
func (r *Reader) WithSessions(s Sessions) *Reader {
	c := *r
	c.sessions = s
	return &c
}

// Open returns desc's blob from the first of locations that serves it,
// and that location. A location that fails (no such blob, no such layout,
// a registry error) gives way to the next; when all fail, the error joins
// every location's, so a registry's *registry.Error, ocilayout's
// ErrNotFound and a session's *session.NoSessionError remain visible to
// errors.As and errors.Is.
func (r *Reader) Open(ctx context.Context, locations []events.BlobLocation, desc ocispec.Descriptor) (io.ReadCloser, events.BlobLocation, error) {
	if len(locations) == 0 {
		return nil, events.BlobLocation{}, fmt.Errorf("blob %s: %w", desc.Digest, ErrNoLocation)
	}
	var errs []error
	for _, loc := range locations {
		rc, err := r.openAt(ctx, loc, desc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", loc, err))
			continue
		}
		// Registry reads are lazy: the first byte tells whether the blob
		// is there.
		br := bufio.NewReaderSize(rc, 64<<10)
		if _, err := br.Peek(1); err != nil && !errors.Is(err, io.EOF) {
			_ = rc.Close()
			errs = append(errs, fmt.Errorf("%s: %w", loc, err))
			continue
		}
		return readCloser{Reader: br, Closer: rc}, loc, nil
	}
	return nil, events.BlobLocation{}, fmt.Errorf("blob %s: %w", desc.Digest, errors.Join(errs...))
}

type readCloser struct {
	io.Reader
	io.Closer
}

func (r *Reader) openAt(ctx context.Context, loc events.BlobLocation, desc ocispec.Descriptor) (io.ReadCloser, error) {
	switch {
	case loc.Session != "":
		if r.sessions == nil {
			return nil, fmt.Errorf("no session reader: %w", ErrNoLocation)
		}
		return r.sessions.Open(ctx, loc.Session, loc.Store, desc)
	case loc.Layout != "":
		l, err := ocilayout.Open(loc.Layout)
		if err != nil {
			return nil, err
		}
		return l.OpenBlob(ctx, desc)
	case loc.Ref != "":
		return r.reg.Open(ctx, loc.Ref, desc)
	}
	return nil, fmt.Errorf("empty location: %w", ErrNoLocation)
}
