package exporter

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/pkg/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/blobs"
	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/registry"
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

func (h *Handler) writer(_ context.Context, t cachefmt.ExportTarget) (writer, error) {
	if t.Type == cachefmt.TypeLocal {
		l, err := ocilayout.Create(t.Dest)
		if err != nil {
			return nil, bus.Invalid(fmt.Errorf("local cache exporter: %w", err))
		}
		return &layoutWriter{l: l, tag: t.Tag, read: h.open}, nil
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

// layoutWriter writes into an OCI layout; blobs are written atomically and
// verified, and the tag goes into index.json last.
type layoutWriter struct {
	l    *ocilayout.Layout
	tag  string
	read opener
}

func (w *layoutWriter) blob(ctx context.Context, desc ocispec.Descriptor, from []events.BlobLocation) (registry.PushResult, error) {
	has, err := w.l.Has(ctx, desc)
	if err != nil {
		return registry.PushResult{}, err
	}
	if has {
		return registry.PushResult{Existed: true}, nil
	}
	rc, err := w.read(ctx, from, desc)
	if err != nil {
		return registry.PushResult{}, err
	}
	defer func() { _ = rc.Close() }()
	if _, err := w.l.WriteBlob(ctx, desc, rc); err != nil {
		return registry.PushResult{}, err
	}
	return registry.PushResult{Uploaded: true}, nil
}

func (w *layoutWriter) config(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	_, err := w.l.WriteBlobBytes(ctx, desc, data)
	return err
}

func (w *layoutWriter) manifest(ctx context.Context, desc ocispec.Descriptor, data []byte) error {
	if _, err := w.l.WriteBlobBytes(ctx, desc, data); err != nil {
		return err
	}
	return w.l.Tag(ctx, desc, w.tag)
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

// layoutReader reads a cache from an OCI layout.
type layoutReader struct {
	l   *ocilayout.Layout
	src cachefmt.ImportSource
}

func (r *layoutReader) location() events.BlobLocation { return events.BlobLocation{Layout: r.l.Root()} }

func (r *layoutReader) top(ctx context.Context) (ocispec.Descriptor, error) {
	if r.src.Digest == "" {
		return r.l.Resolve(ctx, r.src.Tag)
	}
	idx, err := r.l.Index(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	i := slices.IndexFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == r.src.Digest })
	if i < 0 {
		return ocispec.Descriptor{}, fmt.Errorf("no manifest %s in %s's index.json: %w", r.src.Digest, r.l.Root(), ocilayout.ErrNotFound)
	}
	return idx.Manifests[i], nil
}

func (r *layoutReader) read(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	return r.l.ReadBlob(ctx, desc, registry.DefaultMaxManifestBytes)
}

func (r *layoutReader) has(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return r.l.Has(ctx, desc)
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

func (h *Handler) reader(src cachefmt.ImportSource) (reader, error) {
	if src.Type == cachefmt.TypeLocal {
		l, err := ocilayout.Open(src.Src)
		if err != nil {
			return nil, err
		}
		return &layoutReader{l: l, src: src}, nil
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
