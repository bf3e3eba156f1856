package cachefmt

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types the format converts from and to.
const (
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerZstd    = "application/vnd.docker.image.rootfs.diff.tar.zstd"
)

// Form is how a cache config travels.
type Form int

// The forms.
const (
	// FormImageManifest is an OCI image manifest whose config is the
	// cache config and whose layers are the blobs (BuildKit's default
	// since v0.21, and the only form every registry accepts).
	FormImageManifest Form = iota
	// FormIndex is an index (OCI or Docker manifest list) whose entries
	// are the blobs followed by the cache config.
	FormIndex
	// FormInline is an image whose config carries the records under
	// InlineConfigKey; it has no cache config blob.
	FormInline
)

func (f Form) String() string {
	switch f {
	case FormImageManifest:
		return "image manifest"
	case FormIndex:
		return "index"
	case FormInline:
		return "inline"
	}
	return fmt.Sprintf("form(%d)", int(f))
}

// ConvertLayerMediaType returns a layer media type in OCI form (oci) or
// Docker form; other media types are returned as they are.
func ConvertLayerMediaType(mediaType string, oci bool) string {
	toOCI := map[string]string{
		MediaTypeDockerLayer:     ocispec.MediaTypeImageLayer,
		MediaTypeDockerLayerGzip: ocispec.MediaTypeImageLayerGzip,
		MediaTypeDockerLayerZstd: ocispec.MediaTypeImageLayerZstd,
	}
	if oci {
		if t, ok := toOCI[mediaType]; ok {
			return t
		}
		return mediaType
	}
	for docker, o := range toOCI {
		if o == mediaType {
			return docker
		}
	}
	return mediaType
}

// ConfigDescriptor returns the config's JSON and its descriptor,
// refusing (ErrTooLarge) a config BuildKit could not import.
func ConfigDescriptor(cfg Config) ([]byte, ocispec.Descriptor, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: MediaTypeConfig, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := CheckSize(desc); err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return data, desc, nil
}

// CheckSize fails with ErrTooLarge, in BuildKit's import error text, for
// a manifest or config over MaxBlobSize.
func CheckSize(desc ocispec.Descriptor) error {
	if desc.Size > MaxBlobSize {
		return fmt.Errorf("blob %s is too large (%d > %d): BuildKit could not import it: %w", desc.Digest, desc.Size, MaxBlobSize, ErrTooLarge)
	}
	return nil
}

// index is BuildKit's own manifest-list type: an OCI index cannot list
// non-manifests in containerd's types, and the Docker one has no
// annotations.
type index struct {
	specs.Versioned
	MediaType string               `json:"mediaType,omitempty"`
	Manifests []ocispec.Descriptor `json:"manifests"`
}

// BuildManifest returns the manifest of a cache: layers (already in their
// wire form, see LayerDescriptor) and the config descriptor, in form (an
// image manifest, which needs oci, or an index), and its descriptor. It
// refuses (ErrTooLarge) a manifest BuildKit could not import.
func BuildManifest(form Form, oci bool, layers []ocispec.Descriptor, config ocispec.Descriptor) ([]byte, ocispec.Descriptor, error) {
	var v any
	var mediaType string
	switch form {
	case FormImageManifest:
		if !oci {
			return nil, ocispec.Descriptor{}, fmt.Errorf("invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format: %w", ErrInvalid)
		}
		mediaType = ocispec.MediaTypeImageManifest
		if layers == nil {
			layers = []ocispec.Descriptor{}
		}
		v = ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediaType, Config: config, Layers: layers}
	case FormIndex:
		mediaType = MediaTypeDockerManifestList
		if oci {
			mediaType = ocispec.MediaTypeImageIndex
		}
		v = index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediaType, Manifests: append(append([]ocispec.Descriptor{}, layers...), config)}
	default:
		return nil, ocispec.Descriptor{}, fmt.Errorf("cannot write a cache in %s form: %w", form, ErrInvalid)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := CheckSize(desc); err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return data, desc, nil
}

// LayerDescriptor is the wire form of a layer descriptor in a cache
// manifest, as BuildKit writes it: the media type converted to OCI or
// Docker form, the digest, size and URLs, and the annotations
// containerd.io/uncompressed (diffID) and buildkit/createdat (createdAt,
// unless the descriptor already has one, so a re-export keeps it).
func LayerDescriptor(d ocispec.Descriptor, diffID digest.Digest, createdAt time.Time, oci bool) ocispec.Descriptor {
	out := ocispec.Descriptor{
		MediaType: ConvertLayerMediaType(d.MediaType, oci),
		Digest:    d.Digest,
		Size:      d.Size,
		URLs:      d.URLs,
	}
	out.Annotations = map[string]string{}
	if v, ok := d.Annotations[AnnotationCreatedAt]; ok {
		out.Annotations[AnnotationCreatedAt] = v
	} else {
		t, _ := createdAt.UTC().MarshalText()
		out.Annotations[AnnotationCreatedAt] = string(t)
	}
	if diffID != "" {
		out.Annotations[AnnotationUncompressed] = diffID.String()
	} else if v, ok := d.Annotations[AnnotationUncompressed]; ok {
		out.Annotations[AnnotationUncompressed] = v
	}
	return out
}

// Manifest is what a cache's top-level blob says.
type Manifest struct {
	// Form is how the cache travels.
	Form Form
	// MediaType is the top-level blob's media type, as inferred.
	MediaType string
	// Config is the cache config's descriptor; for FormInline, the image
	// config's.
	Config ocispec.Descriptor
	// Layers are the blobs the cache may use.
	Layers []ocispec.Descriptor
}

// Blobs returns the layers by digest, for Parse.
func (m Manifest) Blobs() map[digest.Digest]ocispec.Descriptor {
	out := make(map[digest.Digest]ocispec.Descriptor, len(m.Layers))
	for _, l := range m.Layers {
		out[l.Digest] = l
	}
	return out
}

// ReadManifest reads the top-level blob of a cache: an image manifest
// whose config is a cache config, an index or manifest list with a cache
// config among its entries, or (FormInline) an image manifest, whose
// config the caller then reads with InlineConfig. The media type is
// inferred from the content as BuildKit does; anything else fails with
// BuildKit's "unsupported or uninferrable manifest type".
func ReadManifest(data []byte) (Manifest, error) {
	if int64(len(data)) > MaxBlobSize {
		return Manifest{}, fmt.Errorf("blob %s is too large (%d > %d): %w", digest.FromBytes(data), len(data), MaxBlobSize, ErrTooLarge)
	}
	var probe struct {
		MediaType string            `json:"mediaType"`
		Config    json.RawMessage   `json:"config"`
		Layers    json.RawMessage   `json:"layers"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return Manifest{}, fmt.Errorf("cache manifest: %w: %w", err, ErrInvalid)
	}
	switch {
	case probe.Manifests != nil && probe.Config == nil:
		var idx index
		if err := json.Unmarshal(data, &idx); err != nil {
			return Manifest{}, fmt.Errorf("cache index: %w: %w", err, ErrInvalid)
		}
		m := Manifest{Form: FormIndex, MediaType: probe.MediaType}
		if m.MediaType == "" {
			m.MediaType = ocispec.MediaTypeImageIndex
		}
		found := false
		for _, d := range idx.Manifests {
			if d.MediaType == MediaTypeConfig {
				m.Config, found = d, true
				continue
			}
			m.Layers = append(m.Layers, d)
		}
		if !found {
			return Manifest{}, fmt.Errorf("index %s lists no %s: an image index, not a cache: %w", digest.FromBytes(data), MediaTypeConfig, ErrInvalid)
		}
		return m, nil
	case probe.Config != nil && probe.Manifests == nil:
		var mf ocispec.Manifest
		if err := json.Unmarshal(data, &mf); err != nil {
			return Manifest{}, fmt.Errorf("cache manifest: %w: %w", err, ErrInvalid)
		}
		m := Manifest{Form: FormImageManifest, MediaType: probe.MediaType, Config: mf.Config, Layers: mf.Layers}
		if m.MediaType == "" {
			m.MediaType = ocispec.MediaTypeImageManifest
		}
		if mf.Config.MediaType != MediaTypeConfig {
			m.Form = FormInline
		}
		return m, nil
	}
	return Manifest{}, fmt.Errorf("unsupported or uninferrable manifest type: %w", ErrInvalid)
}

// InlineConfig reads an inline cache from an image config: the records
// under InlineConfigKey, with layers synthesised as a linear chain of the
// manifest's layers (parent i-1) annotated with their diffIDs, as BuildKit's
// importInlineCache does. found is false when the image carries no inline
// cache.
func InlineConfig(imageConfig []byte, m Manifest) (cfg Config, layers []ocispec.Descriptor, found bool, err error) {
	var img struct {
		ocispec.Image
		Cache string `json:"moby.buildkit.cache.v0"`
	}
	if err := json.Unmarshal(imageConfig, &img); err != nil {
		return Config{}, nil, false, fmt.Errorf("image config: %w: %w", err, ErrInvalid)
	}
	if img.Cache == "" {
		return Config{}, nil, false, nil
	}
	raw, err := base64.StdEncoding.DecodeString(img.Cache)
	if err != nil {
		return Config{}, nil, false, fmt.Errorf("inline cache: %w: %w", err, ErrInvalid)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return Config{}, nil, false, fmt.Errorf("inline cache records: %w: %w", err, ErrInvalid)
	}
	if len(img.RootFS.DiffIDs) != len(m.Layers) {
		return Config{}, nil, false, fmt.Errorf("invalid image config: %d diff_ids for %d layers: %w", len(img.RootFS.DiffIDs), len(m.Layers), ErrInvalid)
	}
	var history []ocispec.History
	for _, h := range img.History {
		if !h.EmptyLayer {
			history = append(history, h)
		}
	}
	cfg.Layers = nil
	for i, l := range m.Layers {
		d := l
		d.Annotations = map[string]string{AnnotationUncompressed: img.RootFS.DiffIDs[i].String()}
		for k, v := range l.Annotations {
			d.Annotations[k] = v
		}
		if i < len(history) {
			if h := history[i]; h.Created != nil {
				t, _ := h.Created.UTC().MarshalText()
				d.Annotations[AnnotationCreatedAt] = string(t)
			}
			if history[i].CreatedBy != "" {
				d.Annotations[AnnotationDescription] = history[i].CreatedBy
			}
		}
		layers = append(layers, d)
		cfg.Layers = append(cfg.Layers, Layer{Blob: l.Digest, ParentIndex: i - 1})
	}
	return cfg, layers, true, nil
}

// DiffID is a layer descriptor's diffID annotation; empty when absent or
// malformed.
func DiffID(d ocispec.Descriptor) digest.Digest {
	v := digest.Digest(d.Annotations[AnnotationUncompressed])
	if v.Validate() != nil {
		return ""
	}
	return v
}
