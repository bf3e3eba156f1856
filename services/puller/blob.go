package puller

import (
	"context"
	"fmt"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// blobKey is the one key of a docker-image+blob source, computed without
// the network as BuildKit's containerblob source computes it: the digest
// of the blob digest, file name, mode and owner (see
// source.ImageBlobIdentifier.CacheKey), pinned to the blob digest. Its
// snapshot is one file fetched from the reference's repository.
// (oci-layout+blob reads the blob from a client's layout over a session:
// ociBlobKey, oci.go.)
func (h *Handler) blobKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	blob := id.(*source.ImageBlobIdentifier)
	if in.Index != 0 {
		return nil, failure.Invalid(fmt.Errorf("%s has no cache key index %d", blob.Scheme(), in.Index))
	}
	key, err := blob.CacheKey()
	if err != nil {
		return nil, err
	}
	dgst := blob.Reference.Digest()
	ck := events.CacheKey{Index: 0, Key: key.String(), Digest: source.SolverDigest(key.String()), Pin: dgst.String(), Done: true}
	return h.contentKey(ctx, in, ck, &events.Content{File: blobFile(blob)}, nil)
}

// blobFile is the file a blob source snapshots: named http.filename or the
// digest's hex, mode http.perm or 0600, owned by http.uid:http.gid, mtime
// the Unix epoch, read from the reference's repository. The manifest that
// would give its size is not read, so the size is unknown (-1); the digest
// is verified.
func blobFile(blob *source.ImageBlobIdentifier) *events.FileContent {
	dgst := blob.Reference.Digest()
	name := blob.Filename
	if name == "" {
		name = dgst.Encoded()
	}
	return &events.FileContent{
		Name:      name,
		Perm:      int64(blob.Mode()),
		UID:       int64(blob.UID),
		GID:       int64(blob.GID),
		Digest:    dgst,
		Size:      -1,
		Locations: []events.BlobLocation{{Ref: blob.Reference.String()}},
	}
}
