package source

import (
	"encoding/json"
	"fmt"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// SolverCacheType is the prefix BuildKit's SourceOp hashes with every key.
const SolverCacheType = "buildkit.source.v0"

// MainManifestKey is the index-0 key of an image source: the sha256 of a
// JSON document holding the top-level digest (an index or a manifest), the
// platform and the layer limit, with BuildKit's field names, order and
// omitempty rules. The platform is part of the key because one index digest
// resolves to a different manifest per platform.
func MainManifestKey(top digest.Digest, p ocispec.Platform, layerLimit *int) digest.Digest {
	dt, err := json.Marshal(struct {
		Digest     digest.Digest
		OS         string
		Arch       string
		Variant    string   `json:",omitempty"`
		OSVersion  string   `json:",omitempty"`
		OSFeatures []string `json:",omitempty"`
		Limit      *int     `json:",omitempty"`
	}{
		Digest:     top,
		OS:         p.OS,
		Arch:       p.Architecture,
		Variant:    p.Variant,
		OSVersion:  p.OSVersion,
		OSFeatures: p.OSFeatures,
		Limit:      layerLimit,
	})
	if err != nil {
		// A struct of strings, a digest and an *int always marshals.
		panic(fmt.Sprintf("source: marshal main manifest key: %v", err))
	}
	return digest.FromBytes(dt)
}

// ConfigKey is the index-1 key of an image source: the OCI chainID of the
// (layer-limited) diff_ids. It depends only on uncompressed layer content,
// so a retagged, re-pushed, mirrored or recompressed copy of an image gets
// the same key. It is empty when there are no diff_ids.
func ConfigKey(diffIDs []digest.Digest) digest.Digest {
	if len(diffIDs) == 0 {
		return ""
	}
	return identity.ChainID(diffIDs)
}

// SolverDigest is the digest BuildKit's solver stores a source key under:
// sha256("buildkit.source.v0:" + key).
func SolverDigest(key string) digest.Digest {
	return digest.FromString(SolverCacheType + ":" + key)
}
