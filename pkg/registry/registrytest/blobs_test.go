package registrytest_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

func TestBlobsBelongToRepositories(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := []byte("only in a")
	d := reg.PushBlob(t, "repo/a", data)

	if got := send(t, reg, http.MethodHead, "/v2/repo/a/blobs/"+d.String(), nil, nil).status; got != http.StatusOK {
		t.Errorf("HEAD in repo/a: %d, want 200", got)
	}
	if got := send(t, reg, http.MethodHead, "/v2/repo/b/blobs/"+d.String(), nil, nil).status; got != http.StatusNotFound {
		t.Errorf("HEAD in repo/b: %d, want 404", got)
	}
	if got := get(t, reg, "/v2/repo/b/blobs/"+d.String()).status; got != http.StatusNotFound {
		t.Errorf("GET in repo/b: %d, want 404", got)
	}
	if got, ok := reg.Blob("repo/a", d); !ok || string(got) != string(data) {
		t.Errorf("Blob(repo/a) = %q, %v; want %q, true", got, ok, data)
	}
	if _, ok := reg.Blob("repo/b", d); ok {
		t.Errorf("Blob(repo/b) found a blob pushed to repo/a only")
	}
	// A repository whose name ends in "blobs" is still its own.
	e := reg.PushBlob(t, "x/blobs", []byte("in x/blobs"))
	if _, ok := reg.Blob("x/blobs", e); !ok {
		t.Errorf("Blob(x/blobs) did not find its blob")
	}
	if _, ok := reg.Blob("x", e); ok {
		t.Errorf("Blob(x) found the blob of x/blobs")
	}
}

func TestMount(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	d := reg.PushBlob(t, "repo/a", []byte("mount me"))
	missing := digest.FromString("missing")

	tests := []struct {
		name  string
		query url.Values
		want  int
		// mounted says whether repo/b holds d afterwards.
		mounted bool
	}{
		{name: "from a repository without it", query: url.Values{"mount": {d.String()}, "from": {"repo/c"}}, want: http.StatusAccepted},
		{name: "a blob nobody has", query: url.Values{"mount": {missing.String()}, "from": {"repo/a"}}, want: http.StatusAccepted},
		{name: "without from", query: url.Values{"mount": {d.String()}}, want: http.StatusAccepted},
		{name: "a bad digest", query: url.Values{"mount": {"sha256:abc"}, "from": {"repo/a"}}, want: http.StatusAccepted},
		{name: "from the repository with it", query: url.Values{"mount": {d.String()}, "from": {"repo/a"}}, want: http.StatusCreated, mounted: true},
	}
	// One after another: each adds to the registry's log.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.Reset()
			path := "/v2/repo/b/blobs/uploads/?" + tt.query.Encode()
			resp := send(t, reg, http.MethodPost, path, nil, nil)
			if resp.status != tt.want {
				t.Fatalf("POST %s: %d %s, want %d", path, resp.status, resp.body, tt.want)
			}
			if tt.mounted {
				if got, want := resp.header.Get("Location"), "/v2/repo/b/blobs/"+d.String(); got != want {
					t.Errorf("Location %q, want %q", got, want)
				}
				if got := resp.header.Get("Docker-Content-Digest"); got != d.String() {
					t.Errorf("Docker-Content-Digest %q, want %s", got, d)
				}
			}
			if _, ok := reg.Blob("repo/b", d); ok != tt.mounted {
				t.Errorf("repo/b holds the blob: %v, want %v", ok, tt.mounted)
			}
			want := []registrytest.Request{{Method: http.MethodPost, Path: "/v2/repo/b/blobs/uploads/", Query: tt.query.Encode(),
				Kind: registrytest.KindUpload, Repo: "repo/b", Status: tt.want}}
			if diff := cmp.Diff(want, reg.Requests(), cmpopts.IgnoreFields(registrytest.Request{}, "UserAgent")); diff != "" {
				t.Errorf("Requests (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, reg.Mounts(), cmpopts.IgnoreFields(registrytest.Request{}, "UserAgent")); diff != "" {
				t.Errorf("Mounts (-want +got):\n%s", diff)
			}
			if u := reg.Uploads(); len(u) != 0 {
				t.Errorf("Uploads = %+v, want none", u)
			}
		})
	}
	if got := send(t, reg, http.MethodHead, "/v2/repo/b/blobs/"+d.String(), nil, nil).status; got != http.StatusOK {
		t.Errorf("HEAD of the mounted blob: %d, want 200", got)
	}
}

func TestUploads(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := []byte("uploaded by hand")
	d := digest.FromBytes(data)

	// Session, chunk, completing PUT; then a monolithic POST.
	start := send(t, reg, http.MethodPost, "/v2/repo/a/blobs/uploads/", nil, nil)
	if start.status != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", start.status, start.body)
	}
	loc := start.header.Get("Location")
	if got := send(t, reg, http.MethodPatch, loc, data, nil).status; got != http.StatusAccepted {
		t.Fatalf("PATCH: %d", got)
	}
	if got := send(t, reg, http.MethodPut, loc+"?digest="+d.String(), nil, nil).status; got != http.StatusCreated {
		t.Fatalf("PUT: %d", got)
	}
	if got := send(t, reg, http.MethodPost, "/v2/repo/b/blobs/uploads/?digest="+d.String(), data, nil).status; got != http.StatusCreated {
		t.Fatalf("monolithic POST: %d", got)
	}
	id := loc[len("/v2/repo/a/blobs/uploads/"):]
	want := []registrytest.Request{
		{Method: http.MethodPatch, Path: loc, Kind: registrytest.KindUpload, Repo: "repo/a", Ref: id, Status: http.StatusAccepted},
		{Method: http.MethodPut, Path: loc, Query: "digest=" + d.String(), Kind: registrytest.KindUpload, Repo: "repo/a", Ref: id, Status: http.StatusCreated},
		{Method: http.MethodPost, Path: "/v2/repo/b/blobs/uploads/", Query: "digest=" + d.String(), Kind: registrytest.KindUpload, Repo: "repo/b", Status: http.StatusCreated},
	}
	if diff := cmp.Diff(want, reg.Uploads(), cmpopts.IgnoreFields(registrytest.Request{}, "UserAgent")); diff != "" {
		t.Errorf("Uploads (-want +got):\n%s", diff)
	}
	for _, repo := range []string{"repo/a", "repo/b"} {
		if got, ok := reg.Blob(repo, d); !ok || string(got) != string(data) {
			t.Errorf("Blob(%s) = %q, %v; want %q", repo, got, ok, data)
		}
	}
}

func TestManifestAccessor(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	data := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	desc := reg.PushManifest(t, "repo/a", "tag", ocispec.MediaTypeImageIndex, data)
	for _, ref := range []string{"tag", desc.Digest.String()} {
		got, mediaType := reg.Manifest(t, "repo/a", ref)
		if string(got) != string(data) || mediaType != ocispec.MediaTypeImageIndex {
			t.Errorf("Manifest(repo/a, %s) = %q, %q; want %q, %q", ref, got, mediaType, data, ocispec.MediaTypeImageIndex)
		}
	}
	if n := reg.Count("", ""); n != 0 {
		t.Errorf("Manifest made %d recorded requests, want 0", n)
	}
	if msg := expectFatal(t, func(tb testing.TB) { reg.Manifest(tb, "repo/a", "nope") }); !strings.Contains(msg, "404") {
		t.Errorf("Manifest of a missing tag: Fatalf(%q), want it to mention 404", msg)
	}
}
