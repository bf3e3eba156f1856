package conformance

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/containerd/v2/core/content"
	cerrdefs "github.com/containerd/errdefs"
	cacheimport "github.com/moby/buildkit/cache/remotecache/v1"
	cacheimporttypes "github.com/moby/buildkit/cache/remotecache/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Remarshal reads config the way BuildKit's importer does
// (cacheimport.Parse into a cacheimport.CacheChains, with layers, the
// blobs the cache manifest lists, as the descriptor provider) and returns
// the config BuildKit's exporter would write for what it read
// (CacheChains.Marshal, encoded with encoding/json as BuildKit uploads
// it). For a config Stevedore wrote, the result is the bytes BuildKit
// considers canonical for the same records. A config BuildKit refuses
// fails with BuildKit's error, as Validate does.
func Remarshal(ctx context.Context, config []byte, layers []ocispec.Descriptor) ([]byte, error) {
	cfg, _, err := remarshal(ctx, config, layers)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode buildkit's config: %w", err)
	}
	return data, nil
}

// Validate reads config the way BuildKit's importer does
// (cacheimport.Parse, with layers as the descriptor provider) and returns
// BuildKit's error unchanged; nil when BuildKit accepts the config. Like
// BuildKit, it accepts a result whose blobs are not among layers and
// leaves that result out.
func Validate(config []byte, layers []ocispec.Descriptor) error {
	return cacheimport.Parse(config, provider(layers), cacheimport.NewCacheChains())
}

// remarshal is Remarshal before encoding, with the descriptor provider
// BuildKit's Marshal returns: the descriptor of every blob the config
// names, as BuildKit's exporter puts it in the cache manifest.
func remarshal(ctx context.Context, config []byte, layers []ocispec.Descriptor) (*cacheimporttypes.CacheConfig, cacheimport.DescriptorProvider, error) {
	chains := cacheimport.NewCacheChains()
	if err := cacheimport.Parse(config, provider(layers), chains); err != nil {
		return nil, nil, err
	}
	cfg, descs, err := chains.Marshal(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("buildkit marshal: %w", err)
	}
	return cfg, descs, nil
}

// provider is the descriptor provider BuildKit's importer builds from a
// cache manifest: each listed blob by digest.
//
// Marshal (marshalRemote) asks a result's provider for the Info of each
// of its blobs and leaves the result out when that fails with anything
// but ErrNotImplemented. A DescriptorProviderPair with no InfoProvider
// answers Info from its own descriptor, which is all an importer knows
// about a blob before it fetches it, so none is set. Marshal reads no
// content; Provider is noContent so that a BuildKit that started to would
// get ErrNotFound instead of a nil dereference.
func provider(layers []ocispec.Descriptor) cacheimport.DescriptorProvider {
	p := make(cacheimport.DescriptorProvider, len(layers))
	for _, l := range layers {
		p[l.Digest] = cacheimport.DescriptorProviderPair{Descriptor: l, Provider: noContent{}}
	}
	return p
}

// noContent is a content.Provider that holds no blobs.
type noContent struct{}

var _ content.Provider = noContent{}

// ReaderAt fails with ErrNotFound for every blob.
func (noContent) ReaderAt(_ context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return nil, fmt.Errorf("blob %s: conformance checks hold no blob content: %w", desc.Digest, cerrdefs.ErrNotFound)
}
