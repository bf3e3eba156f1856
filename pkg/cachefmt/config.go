package cachefmt

import (
	"crypto/sha256"
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Media types and well-known names of the format.
const (
	// MediaTypeConfig is the media type of a cache config blob.
	MediaTypeConfig = "application/vnd.buildkit.cacheconfig.v0"
	// AnnotationCreatedAt is the layer descriptor annotation holding when
	// the layer was created (RFC 3339 with nanoseconds).
	AnnotationCreatedAt = "buildkit/createdat"
	// AnnotationDescription is the layer descriptor annotation describing
	// the layer (an inline cache takes it from the image history).
	AnnotationDescription = "buildkit/description"
	// AnnotationUncompressed is the layer descriptor annotation holding
	// the digest of the uncompressed layer (its diffID).
	AnnotationUncompressed = "containerd.io/uncompressed"
	// ResponseManifest is the key of the exported manifest descriptor in
	// BuildKit's exporter response, and in a cache.exported event.
	ResponseManifest = "cache.manifest"
	// InlineConfigKey is the image config field that holds an inline
	// cache (base64 of the records JSON).
	InlineConfigKey = "moby.buildkit.cache.v0"
	// MaxBlobSize is BuildKit's limit on a cache manifest or config it
	// imports: 1 MiB. The exporter refuses to write anything larger.
	MaxBlobSize = 1 << 20
)

// EmptyGzipLayer is the digest of a gzip-compressed empty tar, which many
// images list as a layer. BuildKit (v0.34) keeps it in exported chains, and
// so does Marshal: leaving it out would misalign an importer's layers with
// the image's history.
const EmptyGzipLayer = digest.Digest("sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1")

// Config is the cache config JSON. Field names and omitempty rules are
// BuildKit's (cache/remotecache/v1/types).
type Config struct {
	// Layers are the blobs of every result, each with its parent.
	Layers []Layer `json:"layers,omitempty"`
	// Records are the cache keys.
	Records []Record `json:"records,omitempty"`
}

// Layer is one blob of a chain.
type Layer struct {
	// Blob is the blob's digest; its descriptor is in the manifest.
	Blob digest.Digest `json:"blob,omitempty"`
	// ParentIndex is the index of the layer below in Config.Layers, or -1
	// for the bottom layer. It is omitempty on the wire, so 0 is absent.
	ParentIndex int `json:"parent,omitempty"`
	// Annotations are filled only by exporters without a manifest to
	// carry descriptor metadata (gha, s3, azblob); nil otherwise.
	Annotations *LayerAnnotations `json:"annotations,omitempty"`
}

// LayerAnnotations are descriptor metadata kept in the config itself.
type LayerAnnotations struct {
	// MediaType is the blob's media type.
	MediaType string `json:"mediaType,omitempty"`
	// DiffID is the digest of the uncompressed layer.
	DiffID digest.Digest `json:"diffID,omitempty"`
	// Size is the blob's size in bytes.
	Size int64 `json:"size,omitempty"`
	// CreatedAt is when the layer was made (always written).
	CreatedAt time.Time `json:"createdAt"`
}

// Record is one cache key.
type Record struct {
	// Results are results given by their top layer; the wire name is
	// "layers".
	Results []Result `json:"layers,omitempty"`
	// ChainedResults are results given as explicit layer lists; the wire
	// name is "chains".
	ChainedResults []ChainedResult `json:"chains,omitempty"`
	// Digest is the record digest (see RecordDigest).
	Digest digest.Digest `json:"digest,omitempty"`
	// Inputs lists, for each input of the vertex, the records that can
	// feed it.
	Inputs [][]Input `json:"inputs,omitempty"`
}

// Result is a result given by the index of its top layer.
type Result struct {
	// LayerIndex is the index of the top layer in Config.Layers.
	LayerIndex int `json:"layer"`
	// CreatedAt is when the result was made.
	CreatedAt time.Time `json:"createdAt"`
}

// ChainedResult is a result given as a list of layer indexes, bottom
// first.
type ChainedResult struct {
	// LayerIndexes are indexes into Config.Layers.
	LayerIndexes []int `json:"layers"`
	// CreatedAt is when the result was made.
	CreatedAt time.Time `json:"createdAt"`
}

// Input is one link from a record to a record that can feed one of its
// inputs.
type Input struct {
	// Selector narrows what of the linked record's output is used (a path
	// selector or a content digest); empty for the whole output.
	Selector string `json:"selector,omitempty"`
	// LinkIndex is the index of the linked record in Config.Records.
	LinkIndex int `json:"link"`
}

// RecordDigest is the digest of the record of output of a vertex whose
// cache-map digest is d: sha256("<d>@<output>"). For a source, d is the
// solver digest of its key and output is 0.
func RecordDigest(d digest.Digest, output int) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, sha256Of(fmt.Sprintf("%s@%d", d, output)))
}

func sha256Of(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
