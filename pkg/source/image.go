package source

import (
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/pkg/reference"
	distreference "github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// ResolveMode says where an image reference is resolved (image.resolvemode).
type ResolveMode int

// The resolve modes, with BuildKit's numbering.
const (
	// ResolveModeDefault asks the registry first and falls back to what the
	// fleet resolved before when the registry cannot be reached.
	ResolveModeDefault ResolveMode = iota
	// ResolveModeForcePull asks the registry only.
	ResolveModeForcePull
	// ResolveModePreferLocal uses what the fleet resolved before, and asks
	// the registry only when nothing is known.
	ResolveModePreferLocal
)

// String is the attribute value of the mode.
func (m ResolveMode) String() string {
	switch m {
	case ResolveModeForcePull:
		return "pull"
	case ResolveModePreferLocal:
		return "local"
	default:
		return "default"
	}
}

// ParseResolveMode parses an image.resolvemode value; "" means default.
func ParseResolveMode(v string) (ResolveMode, error) {
	switch v {
	case "", "default":
		return ResolveModeDefault, nil
	case "pull":
		return ResolveModeForcePull, nil
	case "local":
		return ResolveModePreferLocal, nil
	}
	return 0, invalid("invalid resolvemode: "+v, nil)
}

// ImageIdentifier is a parsed docker-image:// identifier.
type ImageIdentifier struct {
	// Reference is the image reference as given; it must have a tag or a
	// digest. It is not normalised (see NormalizeImageRef).
	Reference reference.Spec
	// Platform is the wanted platform; nil means the puller's own.
	Platform *ocispec.Platform
	// ResolveMode is image.resolvemode.
	ResolveMode ResolveMode
	// RecordType is image.recordtype: "regular", "internal" or "frontend".
	// Empty means the attribute was not given; an empty value counts as
	// "regular", as in BuildKit.
	RecordType string
	// LayerLimit is image.layerlimit: use only the first N layers. Nil means
	// all layers.
	LayerLimit *int
	// Checksum is image.checksum: the top-level digest the reference must
	// resolve to. Empty means any.
	Checksum digest.Digest
	// TagMaxAge is image.tagmaxage: how old the fleet's memory of the
	// tag may be to answer this request. Nil means the fleet's setting.
	TagMaxAge *time.Duration
}

var _ Identifier = (*ImageIdentifier)(nil)

// Scheme implements Identifier.
func (*ImageIdentifier) Scheme() string { return SchemeDockerImage }

// String implements Identifier.
func (id *ImageIdentifier) String() string { return SchemeDockerImage + "://" + id.Reference.String() }

// parseImageRef parses a reference the way BuildKit's daemon does: no
// normalisation, and a tag or a digest is required.
//
// One check is added: the canonical form (Spec.String) must parse back to
// the same Spec, because it is what later events carry. containerd decodes
// percent-escapes, so "ho%25st/x:1" would print as "ho%st/x:1", which does
// not parse; BuildKit accepts such a reference and fails when it resolves it.
func parseImageRef(ref string) (reference.Spec, error) {
	spec, err := reference.Parse(ref)
	if err != nil {
		return reference.Spec{}, invalidCause(err)
	}
	if spec.Object == "" {
		return reference.Spec{}, invalidCause(reference.ErrObjectRequired)
	}
	if again, err := reference.Parse(spec.String()); err != nil || again != spec {
		return reference.Spec{}, &Error{
			Msg: fmt.Sprintf("invalid reference %q: its canonical form %q does not parse back", ref, spec.String()),
			Err: reference.ErrInvalid,
		}
	}
	return spec, nil
}

// parseRecordType parses an image.recordtype value as BuildKit does: an
// empty value means "regular".
func parseRecordType(v string) (string, error) {
	switch v {
	case "", "regular":
		return "regular", nil
	case "internal", "frontend":
		return v, nil
	}
	return "", invalid("invalid record type "+v, nil)
}

// parseLayerLimit parses a layer limit attribute value.
func parseLayerLimit(v string) (*int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, invalid("invalid layer limit "+v, err)
	}
	if n <= 0 {
		return nil, invalid("invalid layer limit "+v, nil)
	}
	return &n, nil
}

func clonePlatform(p *ocispec.Platform) *ocispec.Platform {
	if p == nil {
		return nil
	}
	c := *p
	c.OSFeatures = append([]string(nil), p.OSFeatures...)
	if len(c.OSFeatures) == 0 {
		c.OSFeatures = nil
	}
	return &c
}

func init() {
	registerScheme(SchemeSpec{Name: SchemeDockerImage, Route: events.ComponentPuller, Content: ContentLayers, parse: parseImage})
}

func parseImage(_ string, ref string, attrs map[string]string, platform *ocispec.Platform) (Identifier, error) {
	spec, err := parseImageRef(ref)
	if err != nil {
		return nil, err
	}
	id := &ImageIdentifier{Reference: spec, Platform: clonePlatform(platform)}
	for k, v := range attrs {
		switch k {
		case AttrImageResolveMode:
			if id.ResolveMode, err = ParseResolveMode(v); err != nil {
				return nil, err
			}
		case AttrImageRecordType:
			if id.RecordType, err = parseRecordType(v); err != nil {
				return nil, err
			}
		case AttrImageLayerLimit:
			if id.LayerLimit, err = parseLayerLimit(v); err != nil {
				return nil, err
			}
		case AttrImageChecksum:
			d, err := digest.Parse(v)
			if err != nil {
				return nil, invalid("invalid image checksum "+v, err)
			}
			id.Checksum = d
		case AttrImageTagMaxAge:
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, invalid("invalid tag max age "+v, err)
			}
			if d < 0 {
				return nil, invalid("invalid tag max age "+v+": negative", nil)
			}
			id.TagMaxAge = &d
		}
	}
	return id, nil
}

// NormalizeImageRef is what BuildKit's client does to an image name before
// sending it: a full name with the default registry and repository prefix,
// and the tag latest when neither tag nor digest is given.
// "alpine" becomes "docker.io/library/alpine:latest".
func NormalizeImageRef(ref string) (string, error) {
	named, err := distreference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", invalidCause(err)
	}
	return distreference.TagNameOnly(named).String(), nil
}
