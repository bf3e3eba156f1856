package source_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// sourcesDir holds the fixture a real BuildKit made (README.md there).
const sourcesDir = "../../testdata/sources"

// helloLastModified is the Last-Modified the fixture's server sent.
const helloLastModified = "Thu, 01 Jan 2026 00:00:00 GMT"

// bareRoots returns the record digests of the records without inputs or
// results in the fixture's cache config: BuildKit's source roots.
func bareRoots(t *testing.T) map[digest.Digest]bool {
	t.Helper()
	blob := func(d digest.Digest) []byte {
		data, err := os.ReadFile(filepath.Join(sourcesDir, "cache", "blobs", d.Algorithm().String(), d.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	data, err := os.ReadFile(filepath.Join(sourcesDir, "cache", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("cache index: %v (%d manifests)", err, len(idx.Manifests))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &m); err != nil || m.Config.MediaType != cachefmt.MediaTypeConfig {
		t.Fatalf("cache manifest: %v, config %s", err, m.Config.MediaType)
	}
	var cfg cachefmt.Config
	if err := json.Unmarshal(blob(m.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	roots := map[digest.Digest]bool{}
	for _, r := range cfg.Records {
		if len(r.Inputs) == 0 && len(r.Results) == 0 && len(r.ChainedResults) == 0 {
			roots[r.Digest] = true
		}
	}
	return roots
}

// Known answers: the keys BuildKit computed for hello.txt served with a
// Last-Modified time and no ETag, without and with http.checksum, and the
// root records it exported for them.
func TestHTTPCacheKeyAgainstBuildKit(t *testing.T) {
	t.Parallel()
	content, err := os.ReadFile(filepath.Join(sourcesDir, "www", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sum := digest.FromBytes(content)
	const checksum = "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e"
	if sum != checksum {
		t.Fatalf("hello.txt is %s, the fixture says %s", sum, checksum)
	}
	modTime, err := http.ParseTime(helloLastModified)
	if err != nil {
		t.Fatal(err)
	}
	roots := bareRoots(t)
	for _, tc := range []struct {
		name   string
		attrs  []string
		meta   func(id *source.HTTPIdentifier) source.HTTPMetadata
		json   string
		key    string
		record string
	}{
		{
			name: "downloaded",
			meta: func(id *source.HTTPIdentifier) source.HTTPMetadata {
				if _, ok := id.StaticMetadata(); ok {
					t.Error("StaticMetadata without a checksum")
				}
				return source.HTTPMetadata{Filename: id.FileName(""), Digest: sum, LastModified: &modTime}
			},
			json:   `{"Filename":"hello.txt","Perm":0,"UID":0,"GID":0,"Checksum":"` + checksum + `","LastModTime":"` + helloLastModified + `"}`,
			key:    "sha256:70bb0490362b5bb00f241260e477ab66538b8288dfc51f18967f4994a44d8902",
			record: "sha256:82f754d18ddd9ff4ea4128f68742c65db20c02c94259785b54ae7bb9fc45633b",
		},
		{
			name:  "checksum",
			attrs: []string{source.AttrHTTPChecksum, checksum},
			meta: func(id *source.HTTPIdentifier) source.HTTPMetadata {
				m, ok := id.StaticMetadata()
				if !ok {
					t.Error("no StaticMetadata with a checksum")
				}
				return m
			},
			json:   `{"Filename":"hello.txt","Perm":0,"UID":0,"GID":0,"Checksum":"` + checksum + `"}`,
			key:    "sha256:007c06dafa56f5c11333e646c276e7ccf5499d40eae450336045a1d17245ce04",
			record: "sha256:52c481cf3646b21aadcffc8e4fc83841574b39f77054d9354127554a2b654bc7",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := digest.FromString(tc.json).String(); got != tc.key {
				t.Fatalf("the fixture's JSON hashes to %s, not %s", got, tc.key)
			}
			// The URL is not part of the key: any host serving the file
			// gives BuildKit's key.
			for _, u := range []string{"http://HTTPHOST/hello.txt", "https://127.0.0.1:8443/files/hello.txt?x=1"} {
				id := parseHTTP(t, u, tc.attrs...)
				key := id.CacheKey(tc.meta(id))
				if key.String() != tc.key {
					t.Errorf("%s: key %s, want %s", u, key, tc.key)
				}
				record := cachefmt.RecordDigest(source.SolverDigest(key.String()), 0)
				if record.String() != tc.record {
					t.Errorf("%s: record digest %s, want %s", u, record, tc.record)
				}
			}
			if !roots[digest.Digest(tc.record)] {
				t.Errorf("the cache BuildKit exported has no bare root %s", tc.record)
			}
		})
	}
}

// The fields BuildKit omits when empty appear when set, in its order.
func TestHTTPCacheKeyFields(t *testing.T) {
	t.Parallel()
	const sum = "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e"
	id := parseHTTP(t, "https://example.com/a/b",
		source.AttrHTTPPerm, "0755", source.AttrHTTPUID, "1000", source.AttrHTTPGID, "100",
		source.AttrHTTPAuthHeaderSecret, "token",
		"http.header.user-agent", "stevedore", "http.header.accept", "application/json", "http.header.x-other", "dropped")
	mod := time.Date(2026, 1, 1, 1, 2, 3, 0, time.FixedZone("CET", 3600))
	got := id.CacheKey(source.HTTPMetadata{Filename: "b", Digest: sum, LastModified: &mod})
	want := digest.FromString(`{"Filename":"b","Perm":493,"UID":1000,"GID":100,"Checksum":"` + sum +
		`","LastModTime":"Thu, 01 Jan 2026 00:02:03 GMT","AuthHeaderSecret":"token",` +
		`"Header":[{"Name":"Accept","Value":"application/json"},{"Name":"User-Agent","Value":"stevedore"}]}`)
	if got != want {
		t.Errorf("key %s, want %s", got, want)
	}
	if id.Mode() != 0o755 || parseHTTP(t, "https://example.com/a/b").Mode() != source.DefaultFilePerm {
		t.Errorf("modes %o and %o", id.Mode(), parseHTTP(t, "https://example.com/a/b").Mode())
	}
}

func TestHTTPFileName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, filename, disposition, want string
	}{
		{"http://h/dir/file.tar.gz", "", "", "file.tar.gz"},
		{"http://h/dir/file.tar.gz?x=1#frag", "", "", "file.tar.gz"},
		{"http://h/dir/", "", "", "dir"},
		{"http://h/", "", "", "download"},
		{"http://h", "", "", "download"},
		{"http://h/file", "given", `attachment; filename="server.txt"`, "given"},
		{"http://h/file", "", `attachment; filename="server.txt"`, "server.txt"},
		{"http://h/file", "", `attachment; filename="a/b/server.txt"`, "server.txt"},
		{"http://h/file", "", `attachment; filename="dir/"`, "file"},
		{"http://h/file", "", `attachment`, "file"},
		{"http://h/file", "", `;;not a disposition`, "file"},
	} {
		var attrs []string
		if tc.filename != "" {
			attrs = []string{source.AttrHTTPFilename, tc.filename}
		}
		if got := parseHTTP(t, tc.url, attrs...).FileName(tc.disposition); got != tc.want {
			t.Errorf("FileName(%s, %q, %q) = %q, want %q", tc.url, tc.filename, tc.disposition, got, tc.want)
		}
	}
}

// The URL hash is the JSON BuildKit hashes: URL and file name joined by
// NUL (a byte slice, so base64), mode, owner, secret, headers.
func TestHTTPURLHash(t *testing.T) {
	t.Parallel()
	plain := parseHTTP(t, "http://h/f")
	want := digest.FromString(`{"Filename":"` + base64.StdEncoding.EncodeToString([]byte("http://h/f\x00")) + `","Perm":0,"UID":0,"GID":0,"Header":null}`)
	if got := plain.URLHash(); got != want {
		t.Errorf("URLHash = %s, want %s", got, want)
	}
	seen := map[digest.Digest]string{plain.URLHash(): "plain"}
	for name, id := range map[string]*source.HTTPIdentifier{
		"other url":  parseHTTP(t, "http://h/g"),
		"filename":   parseHTTP(t, "http://h/f", source.AttrHTTPFilename, "x"),
		"perm":       parseHTTP(t, "http://h/f", source.AttrHTTPPerm, "0644"),
		"secret":     parseHTTP(t, "http://h/f", source.AttrHTTPAuthHeaderSecret, "s"),
		"user agent": parseHTTP(t, "http://h/f", "http.header.User-Agent", "x"),
	} {
		if other, dup := seen[id.URLHash()]; dup {
			t.Errorf("%s and %s share a URL hash", name, other)
		}
		seen[id.URLHash()] = name
	}
	// A checksum does not change what is requested.
	if parseHTTP(t, "http://h/f", source.AttrHTTPChecksum, "sha256:9347bf9e5b6f42fa181ab19631e9011b836363d3a08b05a8faf318868be5882e").URLHash() != plain.URLHash() {
		t.Error("the checksum changed the URL hash")
	}
}

func parseHTTP(t *testing.T, url string, kv ...string) *source.HTTPIdentifier {
	t.Helper()
	id, err := source.Parse(op(url, kv...))
	if err != nil {
		t.Fatal(err)
	}
	return id.(*source.HTTPIdentifier)
}
