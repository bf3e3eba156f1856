package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/containerd/containerd/v2/pkg/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/blobs"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/registry"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/output"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// writer writes a cache to its target: layer blobs first (in parallel),
// then the config, then the manifest, which makes the cache visible (a
// layout's index.json, a registry's tag) only once everything it names is
// there.
type writer interface {
	blob(ctx context.Context, desc ocispec.Descriptor, from []events.BlobLocation) (registry.PushResult, error)
	config(ctx context.Context, desc ocispec.Descriptor, data []byte) error
	manifest(ctx context.Context, desc ocispec.Descriptor, data []byte) error
}

func (h *Handler) writer(_ context.Context, t cachefmt.ExportTarget, in events.CacheExportRequested) (writer, error) {
	if t.Type == cachefmt.TypeLocal {
		if in.Session == "" || in.Store == "" || h.sessions == nil {
			return nil, failure.Invalid(errors.New("local cache exporter: dest is written through the client's session, and the request names none"))
		}
		return &sessionWriter{s: h.sessions, session: in.Session, store: in.Store, tag: t.Tag, read: h.open}, nil
	}
	host := ""
	if t.Insecure {
		host = hostOf(t.Ref)
	}
	reg, err := h.registries(host)
	if err != nil {
		return nil, err
	}
	return &registryWriter{reg: reg, ref: t.Ref, read: h.open}, nil
}

// open reads a blob from the first location that has it.
func (h *Handler) open(ctx context.Context, from []events.BlobLocation, desc ocispec.Descriptor) (io.ReadCloser, error) {
	reg, err := h.registries("")
	if err != nil {
		return nil, err
	}
	r := blobs.NewReader(reg)
	if h.sessions != nil {
		r = r.WithSessions(h.sessions)
	}
	rc, _, err := r.Open(ctx, from, desc)
	return rc, err
}

type opener func(ctx context.Context, from []events.BlobLocation, desc ocispec.Descriptor) (io.ReadCloser, error)

// sessionWriter writes into the OCI layout a client serves as an output
// store of its session: the client writes the files, with its rights; the
// session verifies each blob before it commits it, and the tag goes into
// index.json last.
type sessionWriter struct {
	s       Sessions
	session string
	store   string
	tag     string
	read    opener
}

func (w *sessionWriter) blob(ctx context.Context, desc ocispec.Descriptor, from []events.BlobLocation) (registry.PushResult, error) {
	size, err := w.s.Stat(ctx, w.session, w.store, desc.Digest)
	switch {
	case err == nil && size == desc.Size:
		return registry.PushResult{Existed: true}, nil
	case err != nil && !missing(err):
		return registry.PushResult{}, err
	}
	rc, err := w.read(ctx, from, desc)
	if err != nil {
		return registry.PushResult{}, err
	}
	defer func() { _ = rc.Close() }()
	if err := w.s.Write(ctx, w.session, w.store, desc, rc); err != nil {
		return registry.PushResult{}, err
	}
	return registry.PushResult{Uploaded: true}, nil
}

func (w *sessionWriter) config(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	return w.s.Write(ctx, w.session, w.store, desc, bytes.NewReader(data))
}

func (w *sessionWriter) manifest(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	if err := w.s.Write(ctx, w.session, w.store, desc, bytes.NewReader(data)); err != nil {
		return err
	}
	return w.s.Tag(ctx, w.session, w.store, desc, w.tag)
}

// registryWriter pushes to a repository, skipping blobs it has and
// mounting those another of the registry's repositories holds.
type registryWriter struct {
	reg  Registry
	ref  string
	read opener
}

func (w *registryWriter) blob(ctx context.Context, desc ocispec.Descriptor, from []events.BlobLocation) (registry.PushResult, error) {
	push := desc
	host := hostOf(w.ref)
	for _, loc := range from {
		if loc.Ref != "" && hostOf(loc.Ref) == host && repoOf(loc.Ref) != repoOf(w.ref) {
			if d, err := registry.MountFrom(push, loc.Ref); err == nil {
				push = d
			}
		}
	}
	return w.reg.PushBlob(ctx, w.ref, push, func(ctx context.Context) (io.ReadCloser, error) {
		return w.read(ctx, from, desc)
	})
}

func (w *registryWriter) config(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	_, err := w.reg.PushBlob(ctx, w.ref, desc, func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(string(data))), nil
	})
	return err
}

func (w *registryWriter) manifest(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	return w.reg.PushManifest(ctx, w.ref, desc, data)
}

// hostOf is the registry host of a reference, "" when it does not parse.
func hostOf(ref string) string {
	spec, err := reference.Parse(ref)
	if err != nil {
		return ""
	}
	return spec.Hostname()
}

// repoOf is the repository of a reference without tag or digest.
func repoOf(ref string) string {
	spec, err := reference.Parse(ref)
	if err != nil {
		return ref
	}
	return spec.Locator
}

// sessionReader reads a cache from the OCI layout a client serves as a
// store of its session: the client reads the files, with its rights.
type sessionReader struct {
	s       Sessions
	session string
	store   string
	src     cachefmt.ImportSource
}

func (r *sessionReader) location() events.BlobLocation {
	return events.BlobLocation{Session: r.session, Store: r.store}
}

func (r *sessionReader) top(ctx context.Context) (ocispec.Descriptor, error) {
	idx, err := r.s.Index(ctx, r.session, r.store)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if r.src.Digest == "" {
		if d, ok := ocilayout.Find(idx, r.src.Tag); ok {
			return d, nil
		}
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s in %s: %w", r.src.Tag, r.location(), ocilayout.ErrNotFound)
	}
	i := slices.IndexFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == r.src.Digest })
	if i < 0 {
		return ocispec.Descriptor{}, fmt.Errorf("no manifest %s in %s's index.json: %w", r.src.Digest, r.location(), ocilayout.ErrNotFound)
	}
	return idx.Manifests[i], nil
}

func (r *sessionReader) read(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	return r.s.ReadBlob(ctx, r.session, r.store, desc, registry.DefaultMaxManifestBytes)
}

func (r *sessionReader) has(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	size, err := r.s.Stat(ctx, r.session, r.store, desc.Digest)
	if missing(err) {
		return false, nil
	}
	return err == nil && size == desc.Size, err
}

// registryReader reads a cache from a registry repository.
type registryReader struct {
	reg Registry
	ref string
}

func (r *registryReader) location() events.BlobLocation { return events.BlobLocation{Ref: r.ref} }

func (r *registryReader) top(ctx context.Context) (ocispec.Descriptor, error) {
	return r.reg.Resolve(ctx, r.ref)
}

func (r *registryReader) read(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	return r.reg.FetchManifest(ctx, r.ref, desc)
}

func (r *registryReader) has(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return r.reg.HasBlob(ctx, r.ref, desc)
}

func (h *Handler) reader(src cachefmt.ImportSource, in events.CacheImportRequested) (reader, error) {
	if src.Type == cachefmt.TypeLocal {
		if in.Session == "" || in.Store == "" || h.sessions == nil {
			return nil, failure.Invalid(errors.New("local cache importer: src is read through the client's session, and the request names none"))
		}
		return &sessionReader{s: h.sessions, session: in.Session, store: in.Store, src: src}, nil
	}
	host := ""
	if src.Insecure {
		host = hostOf(src.Ref)
	}
	reg, err := h.registries(host)
	if err != nil {
		return nil, err
	}
	return &registryReader{reg: reg, ref: src.Ref}, nil
}

// missing reports whether err says that a session's store lacks what was
// asked (failure.ErrNotFound), the session itself answering: a gone
// session (session.ErrNoSession) is not a missing blob.
func missing(err error) bool {
	return errors.Is(err, failure.ErrNotFound) && !errors.Is(err, session.ErrNoSession)
}

// SessionClient is Sessions over one connection: the reads of the
// session's stores (store.Client) and the writes of its output layouts
// (output.Client).
type SessionClient struct {
	*store.Client
	out *output.Client
}

var _ Sessions = SessionClient{}

// NewSessionClient returns the SessionClient of c.
func NewSessionClient(c *session.Client) SessionClient {
	return SessionClient{Client: store.NewClient(c), out: output.NewClient(c)}
}

// Write writes a blob into an output store (output.Client.Write).
func (c SessionClient) Write(ctx context.Context, id, store string, desc ocispec.Descriptor, r io.Reader) error {
	return c.out.Write(ctx, id, store, desc, r)
}

// Tag tags a manifest in an output store (output.Client.Tag).
func (c SessionClient) Tag(ctx context.Context, id, store string, manifest ocispec.Descriptor, tag string) error {
	return c.out.Tag(ctx, id, store, manifest, tag)
}
