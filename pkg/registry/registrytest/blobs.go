package registrytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
)

// repoKey is the request context key under which serveHTTP passes the
// repository it parsed from the path to blobStore. go-containerregistry
// hands its blob handler a repository name of its own making, which for
// the PUT that completes an upload ends in "/blobs"; the parsed name is the
// real one. It is per-request data, not configuration.
type repoKey struct{}

// blobStore is the registry's blob storage. Content is kept once per
// digest, and each repository has the set of digests it holds, as in a
// real registry: a blob pushed to one repository is not in another until
// it is pushed or mounted there. It implements go-containerregistry's
// BlobHandler, BlobStatHandler, BlobPutHandler and BlobDeleteHandler.
type blobStore struct {
	mu      sync.Mutex
	content map[digest.Digest][]byte
	repos   map[string]map[digest.Digest]bool
}

var (
	_ registry.BlobHandler       = (*blobStore)(nil)
	_ registry.BlobStatHandler   = (*blobStore)(nil)
	_ registry.BlobPutHandler    = (*blobStore)(nil)
	_ registry.BlobDeleteHandler = (*blobStore)(nil)
)

func newBlobStore() *blobStore {
	return &blobStore{content: map[digest.Digest][]byte{}, repos: map[string]map[digest.Digest]bool{}}
}

// repoOf returns the repository serveHTTP parsed, or go-containerregistry's
// name for it when there is none.
func repoOf(ctx context.Context, fallback string) string {
	if repo, ok := ctx.Value(repoKey{}).(string); ok && repo != "" {
		return repo
	}
	return fallback
}

// lookup returns the content of d if repo holds it. The caller holds mu.
func (s *blobStore) lookup(repo string, d digest.Digest) ([]byte, bool) {
	if !s.repos[repo][d] {
		return nil, false
	}
	data, ok := s.content[d]
	return data, ok
}

// Stat returns the size of blob h of repo, or registry.ErrNotFound.
func (s *blobStore) Stat(ctx context.Context, repo string, h v1.Hash) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.lookup(repoOf(ctx, repo), digest.Digest(h.String()))
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(data)), nil
}

// Get returns the content of blob h of repo, or registry.ErrNotFound.
func (s *blobStore) Get(ctx context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.lookup(repoOf(ctx, repo), digest.Digest(h.String()))
	if !ok {
		return nil, registry.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Put stores the content rc yields as blob h of repo. go-containerregistry
// verifies size and digest as rc is read; on a mismatch, or any other read
// error, nothing is stored and the error is returned.
func (s *blobStore) Put(ctx context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	d := digest.Digest(h.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.content[d] = data
	s.add(repoOf(ctx, repo), d)
	return nil
}

// Delete removes blob h from repo (its content stays for other
// repositories), or returns registry.ErrNotFound.
func (s *blobStore) Delete(ctx context.Context, repo string, h v1.Hash) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, d := repoOf(ctx, repo), digest.Digest(h.String())
	if !s.repos[repo][d] {
		return registry.ErrNotFound
	}
	delete(s.repos[repo], d)
	return nil
}

// add records that repo holds d. The caller holds mu.
func (s *blobStore) add(repo string, d digest.Digest) {
	if s.repos[repo] == nil {
		s.repos[repo] = map[digest.Digest]bool{}
	}
	s.repos[repo][d] = true
}

// mount adds d to repository to if repository from holds it, and reports
// whether it did.
func (s *blobStore) mount(from, to string, d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.lookup(from, d); !ok {
		return false
	}
	s.add(to, d)
	return true
}

// Blob returns the content of blob d if repository repo holds it. It reads
// the registry's storage directly: nothing is requested or recorded, and
// auth and fault rules do not apply.
func (r *Registry) Blob(repo string, d digest.Digest) ([]byte, bool) {
	r.blobs.mu.Lock()
	defer r.blobs.mu.Unlock()
	data, ok := r.blobs.lookup(repo, d)
	if !ok {
		return nil, false
	}
	return bytes.Clone(data), true
}

// serveMount answers a cross-repository mount,
// POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<source>, when source
// holds the blob: the blob is added to repo and the answer is 201 Created
// with a Location of the blob, as the distribution spec says. It reports
// false, and writes nothing, for any other request, and for a mount with no
// from, a bad digest, or a source without the blob; go-containerregistry
// then starts an upload session (it ignores mount and from), which is the
// spec's 202 Accepted fallback.
func (r *Registry) serveMount(w http.ResponseWriter, req *http.Request, rec Request) bool {
	if req.Method != http.MethodPost || rec.Kind != KindUpload || rec.Ref != "" {
		return false
	}
	q := req.URL.Query()
	from := q.Get("from")
	d, err := digest.Parse(q.Get("mount"))
	if err != nil || from == "" || !r.blobs.mount(from, rec.Repo, d) {
		return false
	}
	w.Header().Set("Location", fmt.Sprintf("/v2/%s/blobs/%s", rec.Repo, d))
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return true
}
