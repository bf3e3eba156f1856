package source_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// attrs builds an attribute map from key/value pairs, leaving out pairs
// whose value is empty so that fuzzers can switch attributes off.
func attrs(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

// checkParse is the invariant every fuzzer checks: Parse never panics, a
// failure is always classified, and a success prints a canonical form that
// parses again (with the same attributes) to the same canonical form.
func checkParse(t *testing.T, o events.SourceOp) {
	t.Helper()
	id, err := source.Parse(o)
	if err != nil {
		if !errors.Is(err, source.ErrInvalid) && !errors.Is(err, source.ErrNotFound) {
			t.Fatalf("Parse(%q, %q): unclassified error %v", o.Identifier, o.Attrs, err)
		}
		return
	}
	s := id.String()
	again, err := source.Parse(events.SourceOp{Identifier: s, Attrs: o.Attrs, Platform: o.Platform})
	if err != nil {
		t.Fatalf("Parse(%q, %q) = %q, which does not parse: %v", o.Identifier, o.Attrs, s, err)
	}
	want := s
	if l, ok := id.(*source.LocalIdentifier); ok {
		// local.session "a:b" prefixes the name with "a-" on every parse,
		// so the canonical form gains the prefix once more.
		if prefix, _, ok := strings.Cut(o.Attrs[source.AttrLocalSessionID], ":"); ok {
			want = source.SchemeLocal + "://" + prefix + "-" + l.Name
		}
	}
	if got := again.String(); got != want {
		t.Fatalf("Parse(%q, %q) = %q, which parses to %q", o.Identifier, o.Attrs, s, got)
	}
	if again.Scheme() != id.Scheme() {
		t.Fatalf("Parse(%q) scheme %q, re-parsed scheme %q", o.Identifier, id.Scheme(), again.Scheme())
	}
	// Keys that need no network must be computable or fail classified.
	if b, ok := id.(*source.ImageBlobIdentifier); ok {
		if _, err := b.CacheKey(); err != nil && !errors.Is(err, source.ErrInvalid) {
			t.Fatalf("CacheKey of %q: unclassified error %v", s, err)
		}
	}
	if oci, ok := id.(*source.OCIIdentifier); ok {
		if err := oci.RequireDigest(); err != nil && !errors.Is(err, source.ErrInvalid) {
			t.Fatalf("RequireDigest of %q: unclassified error %v", s, err)
		}
	}
}

func FuzzParseImage(f *testing.F) {
	f.Add("docker.io/library/alpine:3.20", "", "", "", "")
	f.Add("docker.io/library/alpine@"+dgstA, "pull", "internal", "3", dgstA)
	f.Add("registry.example.com:5000/a/b:v1@"+dgstA, "local", "frontend", "1", "")
	f.Add("alpine", "bad", "bad", "0", "sha256:abc")
	f.Add("host/a/../b:1", "default", "regular", "-1", "notadigest")
	f.Add(":tag", "", "", "abc", "")
	f.Add("ho%25st/x:1", "", "", "", "")
	f.Add("host/a%20b:tag", "", "", "", "")
	f.Fuzz(func(t *testing.T, ref, mode, record, limit, checksum string) {
		checkParse(t, events.SourceOp{
			Identifier: source.SchemeDockerImage + "://" + ref,
			Attrs: attrs(source.AttrImageResolveMode, mode, source.AttrImageRecordType, record,
				source.AttrImageLayerLimit, limit, source.AttrImageChecksum, checksum),
		})
	})
}

func FuzzParseOCI(f *testing.F) {
	f.Add("local/store@"+dgstA, "sess", "store", "2")
	f.Add("local/store:latest", "", "", "")
	f.Add("store", "", "", "0")
	f.Add("local/store:v1@sha256:abc", "", "x", "x")
	f.Fuzz(func(t *testing.T, ref, session, store, limit string) {
		checkParse(t, events.SourceOp{
			Identifier: source.SchemeOCILayout + "://" + ref,
			Attrs: attrs(source.AttrOCILayoutSessionID, session, source.AttrOCILayoutStoreID, store,
				source.AttrOCILayoutLayerLimit, limit),
		})
	})
}

func FuzzParseBlob(f *testing.F) {
	f.Add(true, "local/bundle@"+dgstA, "f", "0644", "16", "0x7", "", "store")
	f.Add(false, "example.com/repo@"+dgstA, "", "", "", "", "internal", "")
	f.Add(false, "example.com/repo:tag", "", "rw", "", "", "", "")
	f.Add(true, "local/bundle@sha256:abc", "", "", "99999999999999999999", "", "x", "")
	f.Fuzz(func(t *testing.T, oci bool, ref, filename, perm, uid, gid, record, store string) {
		scheme := source.SchemeDockerImageBlob
		if oci {
			scheme = source.SchemeOCILayoutBlob
		}
		checkParse(t, events.SourceOp{
			Identifier: scheme + "://" + ref,
			Attrs: attrs(source.AttrHTTPFilename, filename, source.AttrHTTPPerm, perm, source.AttrHTTPUID, uid,
				source.AttrHTTPGID, gid, source.AttrImageRecordType, record, source.AttrOCILayoutStoreID, store),
		})
	})
}

func FuzzParseGit(f *testing.F) {
	f.Add("github.com/moby/buildkit.git#main", "", "", "", "", false)
	f.Add("https://github.com/user/repo.git#mybranch:mydir/mysubdir/", "", "", "", "", true)
	f.Add("git@github.com:user/repo.git?x=1#main:/absolute/path", "", "", "", "", false)
	f.Add("ssh://root@host:2222/root/foo.git#"+sha1, "", sha1[:7], "", "", false)
	f.Add("example.com/r.git#--upload-pack=x", "", "", "", "", false)
	f.Add("example.com/r.git#a%25b:c%2Fd", "mirror.example.com/r.git", "", "", "", false)
	f.Add("example.com/r.git", "", sha1, bundle, "", true)
	f.Add("example.com/r.git", "", "", "https://example.com/bundle", "", false)
	f.Add("example.com/r.git#"+sha2, "", sha1, ociBlob, "true", false)
	f.Add("https://h/%zz", "https://user:password@[/repo.git", "", "", "", false)
	f.Add("git@h:p?a;b", "", "", "", "", false)
	f.Add("ftp://example.com/r.git", "", "", "", "", false)
	f.Add("example.com/a%3Fb%23c%25#x%0Ay:s%01d", "", "", "", "", false)
	f.Add("git@h:a%zz\x01#r%zz", "", "", "", "", false)
	f.Fuzz(func(t *testing.T, ref, fullURL, checksum, bundle, checkout string, keep bool) {
		keepGitDir := ""
		if keep {
			keepGitDir = "true"
		}
		checkParse(t, events.SourceOp{
			Identifier: source.SchemeGit + "://" + ref,
			Attrs: attrs(source.AttrFullRemoteURL, fullURL, source.AttrGitChecksum, checksum,
				source.AttrGitBundle, bundle, source.AttrGitCheckoutBundle, checkout, source.AttrKeepGitDir, keepGitDir),
		})
	})
}

func FuzzParseHTTP(f *testing.F) {
	f.Add(true, "example.com/files/app.tar.gz", "", "", "", "", "")
	f.Add(false, "example.com/f?x=1", dgstA, "0755", "1000", "0x10", "ua/1")
	f.Add(true, "example.com/f", "nope", "rw", "", "", "")
	f.Add(false, "", "sha256:abc", "", "99999999999999999999", "0x", "")
	f.Fuzz(func(t *testing.T, tls bool, ref, checksum, perm, uid, gid, userAgent string) {
		scheme := source.SchemeHTTP
		if tls {
			scheme = source.SchemeHTTPS
		}
		checkParse(t, events.SourceOp{
			Identifier: scheme + "://" + ref,
			Attrs: attrs(source.AttrHTTPChecksum, checksum, source.AttrHTTPPerm, perm, source.AttrHTTPUID, uid,
				source.AttrHTTPGID, gid, source.AttrHTTPHeaderPrefix+"user-agent", userAgent),
		})
	})
}

func FuzzParseLocal(f *testing.F) {
	f.Add("context", "", "", "", "", "")
	f.Add("context", "shared:sess1", `["Dockerfile"]`, `["vendor"]`, "none", "true")
	f.Add("dockerfile", "sess", "not json", "", "metadata", "maybe")
	f.Add("", ":", `null`, `["a",1]`, "x", "0")
	f.Fuzz(func(t *testing.T, name, session, include, exclude, differ, metadata string) {
		checkParse(t, events.SourceOp{
			Identifier: source.SchemeLocal + "://" + name,
			Attrs: attrs(source.AttrLocalSessionID, session, source.AttrIncludePatterns, include,
				source.AttrExcludePatterns, exclude, source.AttrLocalDiffer, differ, source.AttrMetadataTransfer, metadata),
		})
	})
}

func FuzzParse(f *testing.F) {
	f.Add("docker-image://docker.io/library/alpine:3.20", source.AttrImageLayerLimit, "2", "", "")
	f.Add("oci-layout://local/store@"+dgstA, source.AttrOCILayoutStoreID, "s", source.AttrOCILayoutLayerLimit, "x")
	f.Add("docker-image+blob://example.com/repo@"+dgstA, source.AttrHTTPPerm, "0644", "", "")
	f.Add("oci-layout+blob://local/bundle@"+dgstA, source.AttrOCILayoutSessionID, "s", "", "")
	f.Add("git://github.com/moby/buildkit.git#main:docs", source.AttrGitCheckoutBundle, "true", "", "")
	f.Add("https://example.com/f", source.AttrHTTPHeaderPrefix+"Accept", "*/*", source.AttrHTTPChecksum, "x")
	f.Add("http://example.com/f", "", "", "", "")
	f.Add("local://context", source.AttrLocalSessionID, "a:b", source.AttrFollowPaths, `["x"]`)
	f.Add("alpine", "", "", "", "")
	f.Add("nope://x", "", "", "", "")
	f.Add("://", "", "", "", "")
	f.Fuzz(func(t *testing.T, identifier, k1, v1, k2, v2 string) {
		checkParse(t, events.SourceOp{Identifier: identifier, Attrs: attrs(k1, v1, k2, v2)})
	})
}
