package conformance

import (
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/plugins/content/local"
	bksource "github.com/moby/buildkit/source"
	bkblob "github.com/moby/buildkit/source/containerblob"
	bkhttp "github.com/moby/buildkit/source/http"
	bklocal "github.com/moby/buildkit/source/local"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// bkKey is what BuildKit's own source computes for index 0 of an
// identifier: its key, pin and done.
type bkKey struct {
	key, pin string
	done     bool
}

// buildkitKey parses scheme://ref with BuildKit's source src and asks its
// instance for the index-0 key, with no session manager and no job: the
// sources below compute their keys from the identifier alone.
func buildkitKey(t *testing.T, src bksource.Source, scheme, ref string, attrs map[string]string) bkKey {
	t.Helper()
	id, err := src.Identifier(scheme, ref, attrs, nil)
	if err != nil {
		t.Fatalf("BuildKit's identifier of %s://%s: %v", scheme, ref, err)
	}
	inst, err := src.Resolve(t.Context(), id, nil, nil)
	if err != nil {
		t.Fatalf("BuildKit's resolve of %s://%s: %v", scheme, ref, err)
	}
	key, pin, _, done, err := inst.CacheKey(t.Context(), nil, 0)
	if err != nil {
		t.Fatalf("BuildKit's key of %s://%s: %v", scheme, ref, err)
	}
	return bkKey{key: key, pin: pin, done: done}
}

func parse(t *testing.T, identifier string, attrs map[string]string) source.Identifier {
	t.Helper()
	id, err := source.Parse(events.SourceOp{Identifier: identifier, Attrs: attrs})
	if err != nil {
		t.Fatalf("Parse(%s): %v", identifier, err)
	}
	return id
}

// The keys of local sources are BuildKit's, for every attribute that goes
// into them: the session (named by local.session, with and without a
// prefix), the patterns, the follow paths.
func TestLocalKeysAreBuildKits(t *testing.T) {
	src, err := bklocal.NewSource(bklocal.Opt{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		attrs map[string]string
	}{
		{"session only", map[string]string{"local.session": "s0123456789"}},
		{"prefixed session", map[string]string{"local.session": "ctx:s0123456789"}},
		{"patterns", map[string]string{"local.session": "s1", "local.includepattern": `["a","b/**"]`, "local.excludepatterns": `["*.tmp","!keep.tmp"]`}},
		{"follow paths and hint", map[string]string{"local.session": "s2", "local.followpaths": `["Dockerfile"]`, "local.sharedkeyhint": "context", "local.differ": "none"}},
		{"empty arrays", map[string]string{"local.session": "s3", "local.includepattern": `[]`, "local.excludepatterns": `[]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := buildkitKey(t, src, "local", "context", tc.attrs)
			id := parse(t, "local://context", tc.attrs).(*source.LocalIdentifier)
			got, err := id.CacheKey("")
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != want.key || got.Digest.String() != want.pin || !want.done {
				t.Errorf("key %q pin %s, BuildKit's %q pin %s (done %v)", got.Key, got.Digest, want.key, want.pin, want.done)
			}
		})
	}
}

// The keys of docker-image+blob and oci-layout+blob sources are
// BuildKit's, computed without the network.
func TestBlobKeysAreBuildKits(t *testing.T) {
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src, err := bkblob.NewSource(bkblob.SourceOpt{ContentStore: cs})
	if err != nil {
		t.Fatal(err)
	}
	const dgst = "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e"
	for _, tc := range []struct {
		name, scheme, ref string
		attrs             map[string]string
	}{
		{"registry blob", "docker-image+blob", "docker.io/library/alpine@" + dgst, nil},
		{"registry blob with file attrs", "docker-image+blob", "registry.local:5000/a/b@" + dgst, map[string]string{"http.filename": "f.tar", "http.perm": "0755", "http.uid": "1000", "http.gid": "1001"}},
		{"layout blob", "oci-layout+blob", "localhost/store@" + dgst, map[string]string{"oci.store": "store", "oci.session": "s1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := buildkitKey(t, src, tc.scheme, tc.ref, tc.attrs)
			id := parse(t, tc.scheme+"://"+tc.ref, tc.attrs).(*source.ImageBlobIdentifier)
			got, err := id.CacheKey()
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want.key || want.pin != dgst || !want.done {
				t.Errorf("key %s, BuildKit's %s (pin %s, done %v)", got, want.key, want.pin, want.done)
			}
		})
	}
}

// The key of an http source with http.checksum (no network) is BuildKit's.
func TestHTTPChecksumKeysAreBuildKits(t *testing.T) {
	src, err := bkhttp.NewSource(bkhttp.Opt{})
	if err != nil {
		t.Fatal(err)
	}
	const dgst = "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e"
	for _, tc := range []struct {
		name, url string
		attrs     map[string]string
	}{
		{"checksum", "http://example.invalid/hello.txt", map[string]string{"http.checksum": dgst}},
		{"file attrs and headers", "https://example.invalid/dir/", map[string]string{"http.checksum": dgst, "http.filename": "x.bin", "http.perm": "0644", "http.uid": "7", "http.header.accept": "text/plain", "http.header.user-agent": "ua", "http.header.x-other": "dropped"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scheme, rest, _ := strings.Cut(tc.url, "://")
			want := buildkitKey(t, src, scheme, rest, tc.attrs)
			id := parse(t, tc.url, tc.attrs).(*source.HTTPIdentifier)
			m, ok := id.StaticMetadata()
			if !ok {
				t.Fatal("no static metadata with http.checksum")
			}
			got := id.CacheKey(m)
			if got.String() != want.key || want.pin != dgst || !want.done {
				t.Errorf("key %s, BuildKit's %s (pin %s, done %v)", got, want.key, want.pin, want.done)
			}
		})
	}
}
