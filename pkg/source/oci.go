package source

import (
	"fmt"

	"github.com/containerd/containerd/v2/pkg/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// OCIIdentifier is a parsed oci-layout:// identifier: an image read from an
// OCI layout the client exposes through its session, not from a registry.
// Its resolve mode is always "pull".
type OCIIdentifier struct {
	// Reference is the reference as given; it must have a tag or a digest,
	// and it needs a digest to be resolved (see RequireDigest). Its locator
	// names the layout; it is not normalised.
	Reference reference.Spec
	// Platform is the wanted platform; nil means the puller's own.
	Platform *ocispec.Platform
	// SessionID is oci.session: the client session whose content store holds
	// the layout. Empty means any session of the build.
	SessionID string
	// StoreID is oci.store: the name of the layout in the client's content
	// store ("oci:" + StoreID).
	StoreID string
	// LayerLimit is oci.layerlimit: use only the first N layers. Nil means
	// all layers.
	LayerLimit *int
}

var _ Identifier = (*OCIIdentifier)(nil)

// Scheme implements Identifier.
func (*OCIIdentifier) Scheme() string { return SchemeOCILayout }

// String implements Identifier.
func (id *OCIIdentifier) String() string { return SchemeOCILayout + "://" + id.Reference.String() }

// RequireDigest reports whether the reference can be resolved: an OCI layout
// is looked up by digest only, so a reference without one fails with
// BuildKit's resolve-time message `reference "<r>" must have digest`. The
// error matches ErrInvalid.
func (id *OCIIdentifier) RequireDigest() error {
	if id.Reference.Digest() == "" {
		return invalid(fmt.Sprintf("reference %q must have digest", id.Reference.String()), nil)
	}
	return nil
}

func init() {
	registerScheme(SchemeSpec{Name: SchemeOCILayout, Route: events.ComponentPuller, Content: ContentLayers, parse: parseOCI})
}

func parseOCI(_ string, ref string, attrs map[string]string, platform *ocispec.Platform) (Identifier, error) {
	spec, err := parseImageRef(ref)
	if err != nil {
		return nil, err
	}
	id := &OCIIdentifier{Reference: spec, Platform: clonePlatform(platform)}
	for k, v := range attrs {
		switch k {
		case AttrOCILayoutSessionID:
			id.SessionID = v
		case AttrOCILayoutStoreID:
			id.StoreID = v
		case AttrOCILayoutLayerLimit:
			if id.LayerLimit, err = parseLayerLimit(v); err != nil {
				return nil, err
			}
		}
	}
	return id, nil
}
