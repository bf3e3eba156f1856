package source

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/containerd/containerd/v2/pkg/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// ImageBlobIdentifier is a parsed docker-image+blob:// or oci-layout+blob://
// identifier: one blob, fetched by digest from a registry or from a client's
// OCI layout, and stored as a single file.
type ImageBlobIdentifier struct {
	// Reference is the reference as given; it must have a tag or a digest,
	// and it needs a digest for its key (see CacheKey). It is not normalised.
	Reference reference.Spec
	// SchemeName is the scheme it was parsed for: SchemeDockerImageBlob or
	// SchemeOCILayoutBlob.
	SchemeName string
	// SessionID is oci.session: the client session whose content store holds
	// the layout. Empty means any session of the build. Only
	// oci-layout+blob reads it.
	SessionID string
	// StoreID is oci.store: the name of the layout in the client's content
	// store. Only oci-layout+blob reads it, and there it is required.
	StoreID string
	// RecordType is image.recordtype: "regular", "internal" or "frontend".
	// Empty means the attribute was not given.
	RecordType string
	// FileAttrs name, mode and own the file; an empty Filename means the
	// digest's hex.
	FileAttrs
}

var _ Identifier = (*ImageBlobIdentifier)(nil)

// Scheme implements Identifier.
func (id *ImageBlobIdentifier) Scheme() string { return id.SchemeName }

// String implements Identifier.
func (id *ImageBlobIdentifier) String() string { return id.SchemeName + "://" + id.Reference.String() }

// blobKeyVersion is the Version of BuildKit's blob key (its
// containerBlobCacheKeyVersion, since v0.34; earlier daemons wrote no
// Version, so their keys differ).
const blobKeyVersion = "v1"

// CacheKey is BuildKit's key for the blob: the sha256 of a JSON document
// holding the key version, the blob digest, file name, mode and owner, with
// Go field names as keys and no omitempty. It needs no network access. A reference without a
// valid digest fails with an error that starts "invalid reference digest"
// (BuildKit's wording) and matches ErrInvalid.
func (id *ImageBlobIdentifier) CacheKey() (digest.Digest, error) {
	dgst := id.Reference.Digest()
	if dgst == "" {
		return "", invalid("invalid reference digest", fmt.Errorf("reference %q has no digest", id.Reference.String()))
	}
	if err := dgst.Validate(); err != nil {
		return "", invalid("invalid reference digest", err)
	}
	dt, err := json.Marshal(struct {
		Version        string
		Digest         digest.Digest
		Filename       string
		Perm, UID, GID int
	}{
		Version:  blobKeyVersion,
		Digest:   dgst,
		Filename: id.Filename,
		Perm:     id.Perm,
		UID:      id.UID,
		GID:      id.GID,
	})
	if err != nil {
		// A struct of strings and ints always marshals.
		panic(fmt.Sprintf("source: marshal blob key: %v", err))
	}
	return digest.FromBytes(dt), nil
}

func init() {
	registerScheme(SchemeSpec{Name: SchemeDockerImageBlob, Route: events.ComponentPuller, Content: ContentFile, parse: parseBlob},
		SchemeSpec{Name: SchemeOCILayoutBlob, Route: events.ComponentPuller, Content: ContentFile, parse: parseBlob})
}

func parseBlob(scheme, ref string, attrs map[string]string, _ *ocispec.Platform) (Identifier, error) {
	spec, err := parseImageRef(ref)
	if err != nil {
		return nil, err
	}
	id := &ImageBlobIdentifier{Reference: spec, SchemeName: scheme}
	oci := scheme == SchemeOCILayoutBlob
	for k, v := range attrs {
		switch k {
		case AttrHTTPFilename, AttrHTTPPerm, AttrHTTPUID, AttrHTTPGID:
			if err := id.set(k, v); err != nil {
				return nil, err
			}
		case AttrImageRecordType:
			if id.RecordType, err = parseRecordType(v); err != nil {
				return nil, err
			}
		case AttrOCILayoutSessionID:
			if oci {
				id.SessionID = v
			}
		case AttrOCILayoutStoreID:
			if oci {
				id.StoreID = v
			}
		}
	}
	if oci && id.StoreID == "" {
		return nil, invalid("oci-layout blob source requires store id", nil)
	}
	return id, nil
}

// DefaultFilePerm is the mode of the file of an http or blob source
// whose http.perm is not given (or zero), as in BuildKit.
const DefaultFilePerm = 0o600

// FileAttrs are the attributes of the single file an http or blob source
// snapshots: http.filename, http.perm, http.uid and http.gid. Numbers are
// parsed with strconv.ParseInt(v, 0, 64), so "0644" is octal.
type FileAttrs struct {
	// Filename is http.filename: the name of the file in the snapshot.
	// Empty means a name the scheme chooses.
	Filename string
	// Perm is http.perm: the file mode. Zero means 0600.
	Perm int
	// UID is http.uid: the file's owner. Zero means root.
	UID int
	// GID is http.gid: the file's group. Zero means root.
	GID int
}

// set applies one of the four attributes.
func (f *FileAttrs) set(key, v string) error {
	if key == AttrHTTPFilename {
		f.Filename = v
		return nil
	}
	i, err := strconv.ParseInt(v, 0, 64)
	if err != nil {
		return invalidCause(err)
	}
	switch key {
	case AttrHTTPPerm:
		f.Perm = int(i)
	case AttrHTTPUID:
		f.UID = int(i)
	case AttrHTTPGID:
		f.GID = int(i)
	}
	return nil
}

// Mode is the mode the file gets: Perm, or DefaultFilePerm when Perm is
// zero. (The key hashes Perm as given.)
func (f FileAttrs) Mode() int {
	if f.Perm == 0 {
		return DefaultFilePerm
	}
	return f.Perm
}
