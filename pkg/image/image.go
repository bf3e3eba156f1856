// Package image walks an image from its top-level descriptor to the layers
// of one platform, reading only indexes, manifests and configs, never layers:
// what BuildKit's PullManifests does before it computes cache keys.
//
// Vocabulary: the top-level descriptor is what a reference resolves to, an
// index (OCI index or Docker manifest list) or a manifest; Walk picks the
// index entry that best matches the platform (containerd's platforms.Only
// order, like BuildKit's LimitManifests(…, 1)), reads that manifest and its
// config, and returns events.CacheOpts: every descriptor a later step needs,
// each layer with its diffID.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Schema1Error is BuildKit's message for a Docker schema 1 manifest.
const Schema1Error = "support Docker Image manifest version 2, schema 1 has been removed. More information at https://docs.docker.com/go/deprecated-image-specs/"

// ErrInvalid marks content that cannot be used: schema 1, an unknown media
// type, JSON that does not parse, diff_ids that do not match the layers.
// It is of class failure.ErrInvalid.
var ErrInvalid = failure.Invalid(errors.New("invalid image"))

// ErrNoPlatform marks an index without a manifest for the platform. It is
// of class failure.ErrNotFound.
var ErrNoPlatform = failure.NotFound(errors.New("no manifest for platform"))

// Error is an ErrInvalid whose text is exactly Msg (BuildKit's wording where
// BuildKit has one), without the sentinel's text in front.
type Error struct {
	// Msg is the message.
	Msg string
}

func (e *Error) Error() string { return e.Msg }

// Is reports that every Error is an ErrInvalid, and so a failure.ErrInvalid.
func (e *Error) Is(target error) bool { return errors.Is(ErrInvalid, target) }

func invalidf(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// Fetcher reads a small blob (index, manifest or config) by descriptor,
// verified against it.
type Fetcher interface {
	FetchManifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)
}

// FetcherFunc adapts a function to Fetcher.
type FetcherFunc func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)

// FetchManifest implements Fetcher.
func (f FetcherFunc) FetchManifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	return f(ctx, desc)
}

// IsSchema1 reports whether a media type is a Docker schema 1 manifest.
func IsSchema1(mediaType string) bool {
	return mediaType == images.MediaTypeDockerSchema1Manifest || mediaType == "application/vnd.docker.distribution.manifest.v1+json"
}

// Walk reads top (and, for an index, the platform's manifest) and the
// config, and returns the image's CacheOpts for platform. Layers are not
// cut to a layer limit and Ref is left empty: both belong to the request.
func Walk(ctx context.Context, f Fetcher, top ocispec.Descriptor, platform ocispec.Platform) (events.CacheOpts, error) {
	opts := events.CacheOpts{Top: top, Platform: platform}
	if IsSchema1(top.MediaType) {
		return opts, invalidf("%s", Schema1Error)
	}
	if !images.IsIndexType(top.MediaType) && !images.IsManifestType(top.MediaType) {
		// Refuse before reading: it may be a layer.
		return opts, invalidf("%s has media type %q, neither an index nor a manifest", top.Digest, top.MediaType)
	}
	data, err := f.FetchManifest(ctx, top)
	if err != nil {
		return opts, err
	}
	mdesc := top
	if images.IsIndexType(top.MediaType) {
		mdesc, err = pick(data, platform)
		if err != nil {
			return opts, fmt.Errorf("%s: %w", top.Digest, err)
		}
		if IsSchema1(mdesc.MediaType) {
			return opts, invalidf("%s", Schema1Error)
		}
		if data, err = f.FetchManifest(ctx, mdesc); err != nil {
			return opts, err
		}
	}
	opts.Manifest = mdesc

	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return opts, invalidf("manifest %s: %v", mdesc.Digest, err)
	}
	if m.SchemaVersion == 1 {
		return opts, invalidf("%s", Schema1Error)
	}
	opts.Config = m.Config
	cdata, err := f.FetchManifest(ctx, m.Config)
	if err != nil {
		return opts, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cdata, &cfg); err != nil {
		return opts, invalidf("failed to parse image config %s: %v", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return opts, invalidf("mismatched image rootfs and manifest layers: %d diff_ids, %d layers",
			len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	opts.RootFSType = cfg.RootFS.Type
	if cfg.OS != "" && cfg.Architecture != "" {
		own := ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		if !platforms.Only(platform).Match(own) {
			opts.ImagePlatform = &own
		}
	}
	opts.Layers = make([]events.Layer, len(m.Layers))
	for i, l := range m.Layers {
		opts.Layers[i] = events.Layer{Blob: l, DiffID: cfg.RootFS.DiffIDs[i]}
	}
	return opts, nil
}

// pick chooses the index entry that best matches platform.
func pick(data []byte, platform ocispec.Platform) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return ocispec.Descriptor{}, invalidf("index: %v", err)
	}
	match := platforms.Only(platform)
	var candidates []ocispec.Descriptor
	for _, d := range idx.Manifests {
		if !images.IsManifestType(d.MediaType) && !IsSchema1(d.MediaType) {
			continue // nested indexes, attestations and artifacts
		}
		if d.Platform == nil || match.Match(*d.Platform) {
			candidates = append(candidates, d)
		}
	}
	if len(candidates) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("%w %s", ErrNoPlatform, platforms.FormatAll(platform))
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		if candidates[i].Platform == nil {
			return false
		}
		if candidates[j].Platform == nil {
			return true
		}
		return match.Less(*candidates[i].Platform, *candidates[j].Platform)
	})
	return candidates[0], nil
}
