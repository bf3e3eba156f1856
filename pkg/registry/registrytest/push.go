package registrytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types the layout walk treats specially, besides the OCI ones in
// ocispec.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeSchema1        = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeSchema1Signed  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// PushLayout pushes the one image or index listed in the index.json of the
// OCI image layout at layoutDir to repoTag ("repo:tag", "repo@digest", or
// "repo" for tag latest) and returns that index.json entry. It calls
// t.Fatalf if index.json lists more or fewer than one entry; use
// PushLayoutRef then.
//
// Everything the top-level descriptor reaches and the layout holds is
// pushed: child manifests of an index (by digest), configs and layers of
// image manifests (layers missing from the layout, such as foreign ones,
// are skipped), and the fsLayers of a schema 1 manifest. Manifests are sent
// with their stored bytes and media type, so their digests do not change.
func (r *Registry) PushLayout(t testing.TB, layoutDir, repoTag string) ocispec.Descriptor {
	t.Helper()
	idx := readLayoutIndex(t, layoutDir)
	if len(idx.Manifests) != 1 {
		t.Fatalf("registrytest: %s/index.json lists %d entries, want 1 (use PushLayoutRef)", layoutDir, len(idx.Manifests))
	}
	return r.pushLayoutDesc(t, layoutDir, idx.Manifests[0], repoTag)
}

// PushLayoutRef is PushLayout for the index.json entry whose
// org.opencontainers.image.ref.name annotation is refName. It calls
// t.Fatalf if there is no such entry.
func (r *Registry) PushLayoutRef(t testing.TB, layoutDir, refName, repoTag string) ocispec.Descriptor {
	t.Helper()
	idx := readLayoutIndex(t, layoutDir)
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == refName {
			return r.pushLayoutDesc(t, layoutDir, d, repoTag)
		}
	}
	t.Fatalf("registrytest: %s/index.json has no entry named %q", layoutDir, refName)
	return ocispec.Descriptor{}
}

// PushBlob uploads data to repo as a blob, with a POST and then a
// monolithic PUT, and returns its digest. It calls t.Fatalf on failure.
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte) digest.Digest {
	t.Helper()
	dgst := digest.FromBytes(data)
	resp := r.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", "", nil)
	if resp.status != http.StatusAccepted {
		t.Fatalf("registrytest: start upload of %s to %s: %d %s", dgst, repo, resp.status, resp.body)
	}
	loc, err := url.Parse(resp.header.Get("Location"))
	if err != nil || loc.Path == "" {
		t.Fatalf("registrytest: start upload of %s to %s: bad Location %q", dgst, repo, resp.header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", dgst.String())
	loc.RawQuery = q.Encode()
	resp = r.do(t, http.MethodPut, loc.RequestURI(), "application/octet-stream", data)
	if resp.status != http.StatusCreated {
		t.Fatalf("registrytest: upload %s to %s: %d %s", dgst, repo, resp.status, resp.body)
	}
	if got := resp.header.Get("Docker-Content-Digest"); got != "" && got != dgst.String() {
		t.Fatalf("registrytest: upload %s to %s: registry says %s", dgst, repo, got)
	}
	return dgst
}

// PushManifest stores data, unchanged, as a manifest of repo under ref (a
// tag or a digest) with mediaType as its Content-Type, and returns its
// descriptor. The registry does not validate image manifests, so a test can
// push any bytes; an index must name child manifests already pushed. It
// calls t.Fatalf on failure.
func (r *Registry) PushManifest(t testing.TB, repo, ref, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	resp := r.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, mediaType, data)
	if resp.status != http.StatusCreated {
		t.Fatalf("registrytest: push manifest %s to %s:%s: %d %s", desc.Digest, repo, ref, resp.status, resp.body)
	}
	if got := resp.header.Get("Docker-Content-Digest"); got != "" && got != desc.Digest.String() {
		t.Fatalf("registrytest: push manifest %s to %s:%s: registry says %s", desc.Digest, repo, ref, got)
	}
	return desc
}

// Manifest returns the manifest of repo under ref (a tag or a digest) and
// the media type the registry stored with it, as pushed: the bytes are
// unchanged. Like the push helpers it is not recorded, and auth and fault
// rules do not apply. It calls t.Fatalf if the registry has no such
// manifest.
func (r *Registry) Manifest(t testing.TB, repo, ref string) (data []byte, mediaType string) {
	t.Helper()
	resp := r.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("registrytest: manifest %s:%s: %d %s", repo, ref, resp.status, resp.body)
	}
	return resp.data, resp.header.Get("Content-Type")
}

// pushLayoutDesc pushes top and everything below it, then tags it.
func (r *Registry) pushLayoutDesc(t testing.TB, dir string, top ocispec.Descriptor, repoTag string) ocispec.Descriptor {
	t.Helper()
	repo, ref := splitRepoTag(t, repoTag)
	p := &layoutPusher{r: r, t: t, dir: dir, repo: repo, done: map[digest.Digest]bool{}}
	p.children(top)
	data := p.read(top)
	r.PushManifest(t, repo, ref, top.MediaType, data)
	return top
}

// layoutPusher walks one OCI image layout.
type layoutPusher struct {
	r    *Registry
	t    testing.TB
	dir  string
	repo string
	done map[digest.Digest]bool // blobs and manifests already pushed
}

// read returns the layout's blob for d, checking its digest and size.
func (p *layoutPusher) read(d ocispec.Descriptor) []byte {
	p.t.Helper()
	data, ok := p.tryRead(d)
	if !ok {
		p.t.Fatalf("registrytest: %s: blob %s (%s) is not in the layout", p.dir, d.Digest, d.MediaType)
	}
	return data
}

func (p *layoutPusher) tryRead(d ocispec.Descriptor) ([]byte, bool) {
	p.t.Helper()
	if err := d.Digest.Validate(); err != nil {
		p.t.Fatalf("registrytest: %s: %v", p.dir, err)
	}
	data, err := os.ReadFile(filepath.Join(p.dir, ocispec.ImageBlobsDir, d.Digest.Algorithm().String(), d.Digest.Encoded()))
	if os.IsNotExist(err) {
		return nil, false
	}
	if err != nil {
		p.t.Fatalf("registrytest: %v", err)
	}
	if got := d.Digest.Algorithm().FromBytes(data); got != d.Digest {
		p.t.Fatalf("registrytest: %s: blob %s has digest %s", p.dir, d.Digest, got)
	}
	if d.Size != 0 && int64(len(data)) != d.Size {
		p.t.Fatalf("registrytest: %s: blob %s has size %d, descriptor says %d", p.dir, d.Digest, len(data), d.Size)
	}
	return data, true
}

// blob pushes a non-manifest blob once; missing ones are fatal unless
// optional.
func (p *layoutPusher) blob(d ocispec.Descriptor, optional bool) {
	p.t.Helper()
	if p.done[d.Digest] {
		return
	}
	data, ok := p.tryRead(d)
	if !ok {
		if optional {
			return
		}
		p.t.Fatalf("registrytest: %s: blob %s (%s) is not in the layout", p.dir, d.Digest, d.MediaType)
	}
	p.r.PushBlob(p.t, p.repo, data)
	p.done[d.Digest] = true
}

// manifest pushes a child manifest, and what it references, by digest.
func (p *layoutPusher) manifest(d ocispec.Descriptor) {
	p.t.Helper()
	if p.done[d.Digest] {
		return
	}
	p.children(d)
	p.r.PushManifest(p.t, p.repo, d.Digest.String(), d.MediaType, p.read(d))
	p.done[d.Digest] = true
}

// children pushes everything d references.
func (p *layoutPusher) children(d ocispec.Descriptor) {
	p.t.Helper()
	data := p.read(d)
	switch d.MediaType {
	case ocispec.MediaTypeImageIndex, mediaTypeDockerList:
		var idx ocispec.Index
		p.decode(d, data, &idx)
		for _, c := range idx.Manifests {
			if isManifest(c.MediaType) {
				p.manifest(c)
			} else {
				p.blob(c, true)
			}
		}
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		var m ocispec.Manifest
		p.decode(d, data, &m)
		p.blob(m.Config, false)
		for _, l := range m.Layers {
			p.blob(l, true)
		}
	case mediaTypeSchema1, mediaTypeSchema1Signed:
		var m struct {
			FSLayers []struct {
				BlobSum digest.Digest `json:"blobSum"`
			} `json:"fsLayers"`
		}
		p.decode(d, data, &m)
		for _, l := range m.FSLayers {
			p.blob(ocispec.Descriptor{Digest: l.BlobSum}, true)
		}
	}
}

func (p *layoutPusher) decode(d ocispec.Descriptor, data []byte, v any) {
	p.t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		p.t.Fatalf("registrytest: %s: decode %s (%s): %v", p.dir, d.Digest, d.MediaType, err)
	}
}

func isManifest(mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		mediaTypeDockerList, mediaTypeDockerManifest, mediaTypeSchema1, mediaTypeSchema1Signed:
		return true
	}
	return false
}

// readLayoutIndex reads and decodes a layout's index.json.
func readLayoutIndex(t testing.TB, dir string) ocispec.Index {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("registrytest: %s: %v", filepath.Join(dir, ocispec.ImageIndexFile), err)
	}
	return idx
}

// splitRepoTag splits "repo:tag", "repo@digest" or "repo" (tag latest).
func splitRepoTag(t testing.TB, repoTag string) (repo, ref string) {
	t.Helper()
	if repo, dgst, ok := strings.Cut(repoTag, "@"); ok {
		if err := digest.Digest(dgst).Validate(); err != nil {
			t.Fatalf("registrytest: %q: %v", repoTag, err)
		}
		return repo, dgst
	}
	repo, ref = repoTag, "latest"
	if i := strings.LastIndex(repoTag, ":"); i > strings.LastIndex(repoTag, "/") {
		repo, ref = repoTag[:i], repoTag[i+1:]
	}
	if repo == "" || ref == "" {
		t.Fatalf("registrytest: bad repository reference %q", repoTag)
	}
	return repo, ref
}

// pushResponse is what do returns: the parts of a response the push
// helpers look at.
type pushResponse struct {
	status int
	header http.Header
	// data is the body, up to maxResponseBytes.
	data []byte
	// body is the start of data, quoted for error messages.
	body string
}

// maxResponseBytes caps the bodies do reads: more than any manifest a test
// pushes.
const maxResponseBytes = 64 << 20

// do sends one of the helper's own requests (a push, or Manifest's read),
// marked so the middleware lets it through unrecorded.
func (r *Registry) do(t testing.TB, method, requestURI, contentType string, body []byte) pushResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, r.srv.URL+requestURI, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	req.ContentLength = int64(len(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set(pushHeader, r.pushToken)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("registrytest: %s %s: %v", method, requestURI, err)
	}
	defer func() { _ = resp.Body.Close() }()
	dt, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		t.Fatalf("registrytest: %s %s: read response: %v", method, requestURI, err)
	}
	return pushResponse{status: resp.StatusCode, header: resp.Header, data: dt, body: fmt.Sprintf("%q", dt[:min(len(dt), 1<<16)])}
}
