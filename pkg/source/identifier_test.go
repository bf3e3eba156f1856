package source_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

var (
	dgstA    = "sha256:" + strings.Repeat("a", 64)
	sha1     = strings.Repeat("1", 40)
	sha2     = strings.Repeat("2", 40)
	bundle   = "docker-image+blob://example.com/repo/bundles@" + dgstA
	ociBlob  = "oci-layout+blob://local/bundle@" + dgstA
	sha512   = "sha512:" + strings.Repeat("c", 128)
	linuxArm = &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8", OSFeatures: []string{"f1"}}
)

func op(id string, kv ...string) events.SourceOp {
	o := events.SourceOp{Identifier: id}
	if len(kv) > 0 {
		o.Attrs = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			o.Attrs[kv[i]] = kv[i+1]
		}
	}
	return o
}

func withPlatform(o events.SourceOp, p *ocispec.Platform) events.SourceOp {
	o.Platform = p
	return o
}

func ptr[T any](v T) *T { return &v }

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		op   events.SourceOp
		want source.Identifier
		// str is the canonical String().
		str string
	}{
		// docker-image
		{
			name: "image tag",
			op:   op("docker-image://docker.io/library/alpine:3.20"),
			want: &source.ImageIdentifier{Reference: reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"}},
			str:  "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image digest",
			op:   op("docker-image://docker.io/library/alpine@" + dgstA),
			want: &source.ImageIdentifier{Reference: reference.Spec{Locator: "docker.io/library/alpine", Object: "@" + dgstA}},
			str:  "docker-image://docker.io/library/alpine@" + dgstA,
		},
		{
			name: "image tag and digest with platform",
			op:   withPlatform(op("docker-image://registry.example.com:5000/team/app:v1@"+dgstA), linuxArm),
			want: &source.ImageIdentifier{
				Reference: reference.Spec{Locator: "registry.example.com:5000/team/app", Object: "v1@" + dgstA},
				Platform:  linuxArm,
			},
			str: "docker-image://registry.example.com:5000/team/app:v1@" + dgstA,
		},
		{
			name: "image resolvemode default",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageResolveMode, "default"),
			want: &source.ImageIdentifier{Reference: reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"}},
			str:  "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image resolvemode empty",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageResolveMode, ""),
			want: &source.ImageIdentifier{Reference: reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"}},
			str:  "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image resolvemode pull",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageResolveMode, "pull"),
			want: &source.ImageIdentifier{
				Reference:   reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"},
				ResolveMode: source.ResolveModeForcePull,
			},
			str: "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image resolvemode local",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageResolveMode, "local"),
			want: &source.ImageIdentifier{
				Reference:   reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"},
				ResolveMode: source.ResolveModePreferLocal,
			},
			str: "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image recordtype internal",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageRecordType, "internal"),
			want: &source.ImageIdentifier{
				Reference:  reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"},
				RecordType: "internal",
			},
			str: "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image recordtype empty is regular",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageRecordType, ""),
			want: &source.ImageIdentifier{
				Reference:  reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"},
				RecordType: "regular",
			},
			str: "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image layerlimit 3",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageLayerLimit, "3"),
			want: &source.ImageIdentifier{
				Reference:  reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"},
				LayerLimit: ptr(3),
			},
			str: "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image checksum",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageChecksum, dgstA),
			want: &source.ImageIdentifier{
				Reference: reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"},
				Checksum:  digest.Digest(dgstA),
			},
			str: "docker-image://docker.io/library/alpine:3.20",
		},
		{
			name: "image ignores unknown attributes",
			op: op("docker-image://docker.io/library/alpine:3.20",
				"image.unknown", "whatever", source.AttrKeepGitDir, "true", source.AttrOCILayoutLayerLimit, "bad"),
			want: &source.ImageIdentifier{Reference: reference.Spec{Locator: "docker.io/library/alpine", Object: "3.20"}},
			str:  "docker-image://docker.io/library/alpine:3.20",
		},

		// oci-layout
		{
			name: "oci digest with attributes",
			op: withPlatform(op("oci-layout://local/mystore@"+dgstA,
				source.AttrOCILayoutSessionID, "sess", source.AttrOCILayoutStoreID, "store",
				source.AttrOCILayoutLayerLimit, "2", source.AttrImageLayerLimit, "bad"), linuxArm),
			want: &source.OCIIdentifier{
				Reference:  reference.Spec{Locator: "local/mystore", Object: "@" + dgstA},
				Platform:   linuxArm,
				SessionID:  "sess",
				StoreID:    "store",
				LayerLimit: ptr(2),
			},
			str: "oci-layout://local/mystore@" + dgstA,
		},
		{
			name: "oci tag parses",
			op:   op("oci-layout://local/mystore:latest"),
			want: &source.OCIIdentifier{Reference: reference.Spec{Locator: "local/mystore", Object: "latest"}},
			str:  "oci-layout://local/mystore:latest",
		},

		// docker-image+blob and oci-layout+blob
		{
			name: "docker blob with file attributes",
			op: op("docker-image+blob://example.com/repo@"+dgstA,
				source.AttrHTTPFilename, "bundle", source.AttrHTTPPerm, "0644", source.AttrHTTPUID, "0x10",
				source.AttrHTTPGID, "7", source.AttrImageRecordType, "frontend",
				source.AttrOCILayoutSessionID, "ignored", source.AttrOCILayoutStoreID, "ignored"),
			want: &source.ImageBlobIdentifier{
				Reference:  reference.Spec{Locator: "example.com/repo", Object: "@" + dgstA},
				SchemeName: source.SchemeDockerImageBlob,
				RecordType: "frontend",
				FileAttrs:  source.FileAttrs{Filename: "bundle", Perm: 0o644, UID: 16, GID: 7},
			},
			str: "docker-image+blob://example.com/repo@" + dgstA,
		},
		{
			name: "docker blob recordtype empty is regular",
			op:   op("docker-image+blob://example.com/repo:tag", source.AttrImageRecordType, ""),
			want: &source.ImageBlobIdentifier{
				Reference:  reference.Spec{Locator: "example.com/repo", Object: "tag"},
				SchemeName: source.SchemeDockerImageBlob,
				RecordType: "regular",
			},
			str: "docker-image+blob://example.com/repo:tag",
		},
		{
			name: "oci blob with store and session",
			op: op("oci-layout+blob://local/bundle@"+dgstA,
				source.AttrOCILayoutStoreID, "store", source.AttrOCILayoutSessionID, "sess"),
			want: &source.ImageBlobIdentifier{
				Reference:  reference.Spec{Locator: "local/bundle", Object: "@" + dgstA},
				SchemeName: source.SchemeOCILayoutBlob,
				SessionID:  "sess",
				StoreID:    "store",
			},
			str: "oci-layout+blob://local/bundle@" + dgstA,
		},

		// git
		{
			name: "git host path ref",
			op:   op("git://github.com/moby/buildkit.git#main"),
			want: &source.GitIdentifier{Remote: "https://github.com/moby/buildkit.git", Ref: "main"},
			str:  "git://github.com/moby/buildkit.git#main",
		},
		{
			name: "git no fragment",
			op:   op("git://github.com/moby/buildkit.git"),
			want: &source.GitIdentifier{Remote: "https://github.com/moby/buildkit.git"},
			str:  "git://github.com/moby/buildkit.git",
		},
		{
			name: "git https ref and subdir with trailing slash",
			op:   op("git://https://github.com/user/repo.git#mybranch:mydir/mysubdir/"),
			want: &source.GitIdentifier{Remote: "https://github.com/user/repo.git", Ref: "mybranch", Subdir: "mydir/mysubdir"},
			str:  "git://github.com/user/repo.git#mybranch:mydir/mysubdir",
		},
		{
			name: "git subdir without ref",
			op:   op("git://git://github.com/user/repo.git#:mydir/mysubdir/"),
			want: &source.GitIdentifier{Remote: "git://github.com/user/repo.git", Subdir: "mydir/mysubdir"},
			str:  "git://github.com/user/repo.git#:mydir/mysubdir",
		},
		{
			name: "git scp-like with absolute subdir",
			op:   op("git://git@github.com:user/repo.git#main:/absolute/path"),
			want: &source.GitIdentifier{Remote: "git@github.com:user/repo.git", Ref: "main", Subdir: "absolute/path"},
			str:  "git://github.com/user/repo.git#main:absolute/path",
		},
		{
			name: "git scp-like query is dropped",
			op:   op("git://git@github.com:user/repo.git?x=1#v1"),
			want: &source.GitIdentifier{Remote: "git@github.com:user/repo.git", Ref: "v1"},
			str:  "git://github.com/user/repo.git#v1",
		},
		{
			name: "git ssh with user and port",
			op:   op("git://ssh://root@subdomain.example.hostname:2222/root/my/really/weird/path/foo.git#main"),
			want: &source.GitIdentifier{
				Remote: "ssh://root@subdomain.example.hostname:2222/root/my/really/weird/path/foo.git",
				Ref:    "main",
			},
			str: "git://subdomain.example.hostname:2222/root/my/really/weird/path/foo.git#main",
		},
		{
			name: "git escaping subdir is cleaned",
			op:   op("git://https://github.com/user/repo.git#main:dir/../../escape"),
			want: &source.GitIdentifier{Remote: "https://github.com/user/repo.git", Ref: "main", Subdir: "escape"},
			str:  "git://github.com/user/repo.git#main:escape",
		},
		{
			name: "git subdir that cleans to root is dropped",
			op:   op("git://https://github.com/user/repo.git#main:../"),
			want: &source.GitIdentifier{Remote: "https://github.com/user/repo.git", Ref: "main"},
			str:  "git://github.com/user/repo.git#main",
		},
		{
			name: "git credentials and query are dropped from the string",
			op:   op("git://https://user:secret@example.com/r.git?variant=x#v1"),
			want: &source.GitIdentifier{Remote: "https://user:secret@example.com/r.git", Ref: "v1"},
			str:  "git://example.com/r.git#v1",
		},
		{
			name: "git upper-case scheme",
			op:   op("git://HTTP://example.com/r.git"),
			want: &source.GitIdentifier{Remote: "http://example.com/r.git"},
			str:  "git://example.com/r.git",
		},
		{
			name: "git unsupported protocol gets https",
			op:   op("git://ftp://example.com/r.git"),
			want: &source.GitIdentifier{Remote: "https://ftp://example.com/r.git"},
			str:  "git://ftp:/example.com/r.git",
		},
		{
			name: "git percent in ref survives the string",
			op:   op("git://example.com/r.git#a%25b"),
			want: &source.GitIdentifier{Remote: "https://example.com/r.git", Ref: "a%b"},
			str:  "git://example.com/r.git#a%25b",
		},
		{
			name: "git fullurl scp-like",
			op:   op("git://github.com/moby/buildkit.git#v0.1", source.AttrFullRemoteURL, "git@github.com:moby/buildkit.git"),
			want: &source.GitIdentifier{Remote: "git@github.com:moby/buildkit.git", Ref: "v0.1"},
			str:  "git://github.com/moby/buildkit.git#v0.1",
		},
		{
			name: "git fullurl without transport gets https",
			op:   op("git://example.com/x.git", source.AttrFullRemoteURL, "mirror.example.com/x.git"),
			want: &source.GitIdentifier{Remote: "https://mirror.example.com/x.git"},
			str:  "git://mirror.example.com/x.git",
		},
		{
			name: "git all attributes",
			op: op("git://example.com/r.git#"+sha1,
				source.AttrKeepGitDir, "true",
				source.AttrAuthHeaderSecret, "hdr",
				source.AttrAuthTokenSecret, "tok",
				source.AttrKnownSSHHosts, "example.com ssh-ed25519 AAAA",
				source.AttrMountSSHSock, "default",
				source.AttrGitChecksum, sha1[:7],
				source.AttrGitSkipSubmodules, "TRUE",
				source.AttrGitMTime, "commit",
				source.AttrGitFetchByCommit, "true",
				source.AttrGitSignaturePubKey, "KEY",
				source.AttrGitSignatureRejectExp, "true",
				source.AttrGitSignatureRequireTag, "yes",
				source.AttrGitSignatureIgnoreTag, "true",
				"git.unknown", "x"),
			want: &source.GitIdentifier{
				Remote:           "https://example.com/r.git",
				Ref:              sha1,
				Checksum:         sha1[:7],
				KeepGitDir:       true,
				AuthTokenSecret:  "tok",
				AuthHeaderSecret: "hdr",
				MountSSHSock:     "default",
				KnownSSHHosts:    "example.com ssh-ed25519 AAAA",
				MTime:            "commit",
				FetchByCommit:    true,
				VerifySignature: &source.GitSignatureVerifyOptions{
					PubKey:            []byte("KEY"),
					RejectExpiredKeys: true,
					IgnoreSignedTag:   true,
				},
			},
			str: "git://example.com/r.git#" + sha1,
		},
		{
			name: "git bundle",
			op: op("git://example.com/repo.git#"+sha1,
				source.AttrGitBundle, ociBlob, source.AttrGitChecksum, sha1,
				source.AttrOCILayoutSessionID, "sess", source.AttrOCILayoutStoreID, "store"),
			want: &source.GitIdentifier{
				Remote:             "https://example.com/repo.git",
				Ref:                sha1,
				Checksum:           sha1,
				Bundle:             ociBlob,
				BundleOCISessionID: "sess",
				BundleOCIStoreID:   "store",
			},
			str: "git://example.com/repo.git#" + sha1,
		},
		{
			name: "git bundle and checkoutbundle",
			op: op("git://example.com/repo.git",
				source.AttrGitBundle, bundle, source.AttrGitChecksum, sha1, source.AttrGitCheckoutBundle, "true"),
			want: &source.GitIdentifier{
				Remote:         "https://example.com/repo.git",
				Checksum:       sha1,
				Bundle:         bundle,
				CheckoutBundle: true,
			},
			str: "git://example.com/repo.git",
		},

		// http and https
		{
			name: "https plain",
			op:   op("https://example.com/files/app.tar.gz"),
			want: &source.HTTPIdentifier{URL: "https://example.com/files/app.tar.gz", TLS: true},
			str:  "https://example.com/files/app.tar.gz",
		},
		{
			name: "http with attributes and headers",
			op: op("http://example.com/f?x=1",
				source.AttrHTTPChecksum, dgstA,
				source.AttrHTTPFilename, "f.bin",
				source.AttrHTTPPerm, "0755",
				source.AttrHTTPUID, "1000",
				source.AttrHTTPGID, "0x10",
				source.AttrHTTPAuthHeaderSecret, "auth",
				source.AttrHTTPHeaderPrefix+"user-agent", "ua/1",
				source.AttrHTTPHeaderPrefix+"ACCEPT", "application/json",
				source.AttrHTTPHeaderPrefix+"X-Custom", "dropped",
				source.AttrHTTPSignaturePubKey, "ignored"),
			want: &source.HTTPIdentifier{
				URL:              "http://example.com/f?x=1",
				Checksum:         digest.Digest(dgstA),
				FileAttrs:        source.FileAttrs{Filename: "f.bin", Perm: 0o755, UID: 1000, GID: 16},
				AuthHeaderSecret: "auth",
				Header: []source.HeaderField{
					{Name: "Accept", Value: "application/json"},
					{Name: "User-Agent", Value: "ua/1"},
				},
			},
			str: "http://example.com/f?x=1",
		},

		// local
		{
			name: "local plain",
			op:   op("local://context"),
			want: &source.LocalIdentifier{Name: "context"},
			str:  "local://context",
		},
		{
			name: "local session without colon",
			op:   op("local://context", source.AttrLocalSessionID, "sess1"),
			want: &source.LocalIdentifier{Name: "context", SessionID: "sess1"},
			str:  "local://context",
		},
		{
			name: "local session with colon prefixes the name",
			op:   op("local://context", source.AttrLocalSessionID, "shared:sess1:x"),
			want: &source.LocalIdentifier{Name: "shared-context", SessionID: "sess1:x"},
			str:  "local://shared-context",
		},
		{
			name: "local all attributes",
			op: op("local://dockerfile",
				source.AttrIncludePatterns, `["Dockerfile","*.go"]`,
				source.AttrExcludePatterns, `["vendor"]`,
				source.AttrFollowPaths, `["a/b"]`,
				source.AttrSharedKeyHint, "hint",
				source.AttrLocalDiffer, "none",
				source.AttrMetadataTransfer, "1",
				source.AttrMetadataTransferExclude, `["keep/**"]`,
				source.AttrLocalUniqueID, "u1"),
			want: &source.LocalIdentifier{
				Name:               "dockerfile",
				IncludePatterns:    []string{"Dockerfile", "*.go"},
				ExcludePatterns:    []string{"vendor"},
				FollowPaths:        []string{"a/b"},
				SharedKeyHint:      "hint",
				Differ:             source.DiffNone,
				MetadataOnly:       true,
				MetadataExceptions: []string{"keep/**"},
			},
			str: "local://dockerfile",
		},
		{
			name: "local unknown differ is metadata",
			op:   op("local://c", source.AttrLocalDiffer, "content", source.AttrMetadataTransfer, "false"),
			want: &source.LocalIdentifier{Name: "c", Differ: source.DiffMetadata},
			str:  "local://c",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := source.Parse(tc.op)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.op.Identifier, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tc.op.Identifier, diff)
			}
			if s := got.String(); s != tc.str {
				t.Errorf("String() = %q, want %q", s, tc.str)
			}
			if scheme, _, _ := strings.Cut(tc.op.Identifier, "://"); got.Scheme() != scheme {
				t.Errorf("Scheme() = %q, want %q", got.Scheme(), scheme)
			}
		})
	}
}

func TestParsePlatformIsCopied(t *testing.T) {
	t.Parallel()
	p := &ocispec.Platform{OS: "linux", Architecture: "amd64", OSFeatures: []string{"x"}}
	for _, id := range []string{"docker-image://example.com/a:1", "oci-layout://local/store@" + dgstA} {
		got, err := source.Parse(withPlatform(op(id), p))
		if err != nil {
			t.Fatal(err)
		}
		var gp *ocispec.Platform
		switch got := got.(type) {
		case *source.ImageIdentifier:
			gp = got.Platform
		case *source.OCIIdentifier:
			gp = got.Platform
		}
		if gp == p || &gp.OSFeatures[0] == &p.OSFeatures[0] {
			t.Errorf("%s: platform shares memory with the op", id)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		op   events.SourceOp
		// want is the exact error text.
		want string
		// class is the sentinel the error matches; nil means ErrInvalid.
		class error
	}{
		// manager
		{name: "no scheme", op: op("alpine"), want: "failed to parse alpine: invalid"},
		{name: "unknown scheme", op: op("foo://bar"), want: "unknown scheme foo: not found", class: source.ErrNotFound},

		// docker-image
		{name: "image without tag or digest", op: op("docker-image://docker.io/library/alpine"), want: "object required"},
		{name: "image not normalised", op: op("docker-image://alpine"), want: "object required"},
		{name: "image no host", op: op("docker-image:///foo:tag"), want: "hostname required"},
		{name: "image nested scheme", op: op("docker-image://host/a://b"), want: "invalid reference"},
		{name: "image climbs", op: op("docker-image://host/a/../b:1"), want: "invalid reference"},
		{name: "image bad port", op: op("docker-image://:tag"), want: `parse "dummy://:tag": invalid port ":tag" after host`},
		{
			name: "image canonical form does not parse back",
			op:   op("docker-image://ho%25st/x:1"),
			want: `invalid reference "ho%25st/x:1": its canonical form "ho%st/x:1" does not parse back`,
		},
		{
			name: "image bad resolvemode",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageResolveMode, "bad"),
			want: "invalid resolvemode: bad",
		},
		{
			name: "image bad recordtype",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageRecordType, "bad"),
			want: "invalid record type bad",
		},
		{
			name: "image layerlimit 0",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageLayerLimit, "0"),
			want: "invalid layer limit 0",
		},
		{
			name: "image layerlimit -1",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageLayerLimit, "-1"),
			want: "invalid layer limit -1",
		},
		{
			name: "image layerlimit abc",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageLayerLimit, "abc"),
			want: `invalid layer limit abc: strconv.Atoi: parsing "abc": invalid syntax`,
		},
		{
			name: "image bad checksum format",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageChecksum, "notadigest"),
			want: "invalid image checksum notadigest: invalid checksum digest format",
		},
		{
			name: "image bad checksum length",
			op:   op("docker-image://docker.io/library/alpine:3.20", source.AttrImageChecksum, "sha256:abc"),
			want: "invalid image checksum sha256:abc: invalid checksum digest length",
		},

		// oci-layout
		{name: "oci without object", op: op("oci-layout://local/mystore"), want: "object required"},
		{
			name: "oci layerlimit 0",
			op:   op("oci-layout://local/mystore@"+dgstA, source.AttrOCILayoutLayerLimit, "0"),
			want: "invalid layer limit 0",
		},
		{
			name: "oci layerlimit x",
			op:   op("oci-layout://local/mystore@"+dgstA, source.AttrOCILayoutLayerLimit, "x"),
			want: `invalid layer limit x: strconv.Atoi: parsing "x": invalid syntax`,
		},

		// blobs
		{name: "blob without object", op: op("docker-image+blob://example.com/repo"), want: "object required"},
		{
			name: "oci blob without store",
			op:   op("oci-layout+blob://local/bundle@"+dgstA, source.AttrOCILayoutSessionID, "sess"),
			want: "oci-layout blob source requires store id",
		},
		{
			name: "blob bad perm",
			op:   op("docker-image+blob://example.com/repo@"+dgstA, source.AttrHTTPPerm, "rw"),
			want: `strconv.ParseInt: parsing "rw": invalid syntax`,
		},
		{
			name: "blob bad uid",
			op:   op("docker-image+blob://example.com/repo@"+dgstA, source.AttrHTTPUID, "99999999999999999999"),
			want: `strconv.ParseInt: parsing "99999999999999999999": value out of range`,
		},
		{
			name: "blob bad recordtype",
			op:   op("docker-image+blob://example.com/repo@"+dgstA, source.AttrImageRecordType, "x"),
			want: "invalid record type x",
		},

		// git
		{
			name: "git ref that looks like an option",
			op:   op("git://example.com/r.git#--upload-pack=touch"),
			want: `invalid git ref "--upload-pack=touch"`,
		},
		{name: "git bad url escape", op: op("git://https://h/%zz"), want: `parse "https://h/%zz": invalid URL escape "%zz"`},
		{name: "git scp-like bad query", op: op("git://git@h:p?a;b"), want: "unknown protocol"},
		{
			name: "git bad fullurl hides credentials",
			op:   op("git://example.com/r.git", source.AttrFullRemoteURL, "https://user:password@[/repo.git"),
			want: "failed to parse git.fullurl",
		},
		{
			name: "git bundle without checksum",
			op:   op("git://example.com/repo.git", source.AttrGitBundle, bundle),
			want: "git.bundle requires git.checksum to be set",
		},
		{
			name: "git bundle https scheme",
			op:   op("git://example.com/repo.git", source.AttrGitBundle, "https://example.com/bundle", source.AttrGitChecksum, sha1),
			want: `git.bundle locator scheme "https" is not supported; expected "docker-image+blob" or "oci-layout+blob"`,
		},
		{
			name: "git bundle missing scheme",
			op:   op("git://example.com/repo.git", source.AttrGitBundle, "example.com/bundle", source.AttrGitChecksum, sha1),
			want: `failed to parse git.bundle locator "example.com/bundle": missing scheme`,
		},
		{
			name: "git bundle without digest",
			op: op("git://example.com/repo.git",
				source.AttrGitBundle, "docker-image+blob://example.com/repo:tag", source.AttrGitChecksum, sha1),
			want: `failed to parse git.bundle locator "docker-image+blob://example.com/repo:tag": invalid digest: invalid checksum digest format`,
		},
		{
			name: "git bundle bad reference",
			op: op("git://example.com/repo.git",
				source.AttrGitBundle, "docker-image+blob:///repo@"+dgstA, source.AttrGitChecksum, sha1),
			want: `failed to parse git.bundle locator "docker-image+blob:///repo@` + dgstA + `": hostname required`,
		},
		{
			name: "git bundle sha512",
			op: op("git://example.com/repo.git",
				source.AttrGitBundle, "docker-image+blob://example.com/repo@"+sha512, source.AttrGitChecksum, sha1),
			want: `git.bundle locator "docker-image+blob://example.com/repo@` + sha512 + `": digest algorithm "sha512" not supported, expected "sha256"`,
		},
		{
			name: "git bundle ref and checksum disagree",
			op:   op("git://example.com/repo.git#"+sha2, source.AttrGitBundle, bundle, source.AttrGitChecksum, sha1),
			want: "expected checksum to match " + sha1 + ", got " + sha2,
		},
		{
			name: "git ref and checksum disagree",
			op:   op("git://example.com/repo.git#"+sha2, source.AttrGitChecksum, sha1[:8]),
			want: "expected checksum to match " + sha1[:8] + ", got " + sha2,
		},
		{
			name: "git checkoutbundle with keepgitdir",
			op:   op("git://example.com/repo.git", source.AttrGitCheckoutBundle, "true", source.AttrKeepGitDir, "true"),
			want: "git.checkoutbundle is incompatible with git.keepgitdir",
		},
		{
			name: "git checkoutbundle with subdir",
			op:   op("git://example.com/repo.git#main:sub", source.AttrGitCheckoutBundle, "true"),
			want: "git.checkoutbundle is incompatible with git.subdir",
		},

		// http
		{
			name: "http bad checksum",
			op:   op("https://example.com/f", source.AttrHTTPChecksum, "nope"),
			want: "invalid checksum digest format",
		},
		{
			name: "http bad perm",
			op:   op("https://example.com/f", source.AttrHTTPPerm, "rw-r--r--"),
			want: `strconv.ParseInt: parsing "rw-r--r--": invalid syntax`,
		},
		{
			name: "http bad gid",
			op:   op("http://example.com/f", source.AttrHTTPGID, "0x"),
			want: `strconv.ParseInt: parsing "0x": invalid syntax`,
		},

		// local
		{
			name: "local include not json",
			op:   op("local://c", source.AttrIncludePatterns, "not json"),
			want: "invalid character 'o' in literal null (expecting 'u')",
		},
		{
			name: "local exclude wrong type",
			op:   op("local://c", source.AttrExcludePatterns, `["a",1]`),
			want: "json: cannot unmarshal number into Go value of type string",
		},
		{
			name: "local followpaths empty",
			op:   op("local://c", source.AttrFollowPaths, ""),
			want: "unexpected end of JSON input",
		},
		{
			name: "local metadata exceptions not an array",
			op:   op("local://c", source.AttrMetadataTransferExclude, `{}`),
			want: "json: cannot unmarshal object into Go value of type []string",
		},
		{
			name: "local bad metadatatransfer",
			op:   op("local://c", source.AttrMetadataTransfer, "maybe"),
			want: `invalid value for local.metadatatransfer "maybe": strconv.ParseBool: parsing "maybe": invalid syntax`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := source.Parse(tc.op)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want error %q", tc.op.Identifier, id, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Parse(%q) error:\n got: %s\nwant: %s", tc.op.Identifier, err, tc.want)
			}
			class := tc.class
			if class == nil {
				class = source.ErrInvalid
			}
			if !errors.Is(err, class) {
				t.Errorf("Parse(%q) error %v does not match %v", tc.op.Identifier, err, class)
			}
		})
	}
}

func TestOCIRequireDigest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want string // empty means no error
	}{
		{id: "oci-layout://local/store@" + dgstA},
		{id: "oci-layout://local/store:v1@" + dgstA},
		{id: "oci-layout://local/store:latest", want: `reference "local/store:latest" must have digest`},
		{id: "oci-layout://example.com/ns/store:1", want: `reference "example.com/ns/store:1" must have digest`},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			t.Parallel()
			id, err := source.Parse(op(tc.id))
			if err != nil {
				t.Fatal(err)
			}
			err = id.(*source.OCIIdentifier).RequireDigest()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("RequireDigest() = %v, want nil", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("RequireDigest() = %v, want %q", err, tc.want)
			case tc.want != "" && !errors.Is(err, source.ErrInvalid):
				t.Errorf("RequireDigest() error %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestImageBlobCacheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		op      events.SourceOp
		want    digest.Digest
		wantErr string
	}{
		{
			name: "with file attributes",
			op: op("docker-image+blob://example.com/repo@"+dgstA,
				source.AttrHTTPFilename, "bundle", source.AttrHTTPPerm, "0644", source.AttrHTTPUID, "16", source.AttrHTTPGID, "7"),
			want: digest.FromString(`{"Version":"v1","Digest":"` + dgstA + `","Filename":"bundle","Perm":420,"UID":16,"GID":7}`),
		},
		{
			name: "zero values are not omitted",
			op:   op("oci-layout+blob://local/bundle:tag@"+dgstA, source.AttrOCILayoutStoreID, "s"),
			want: digest.FromString(`{"Version":"v1","Digest":"` + dgstA + `","Filename":"","Perm":0,"UID":0,"GID":0}`),
		},
		{
			name:    "tag only",
			op:      op("docker-image+blob://example.com/repo:tag"),
			wantErr: `invalid reference digest: reference "example.com/repo:tag" has no digest`,
		},
		{
			name:    "malformed digest",
			op:      op("docker-image+blob://example.com/repo@sha256:abc"),
			wantErr: "invalid reference digest: invalid checksum digest length",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := source.Parse(tc.op)
			if err != nil {
				t.Fatal(err)
			}
			got, err := id.(*source.ImageBlobIdentifier).CacheKey()
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, source.ErrInvalid) {
					t.Fatalf("CacheKey() = %v, %v; want error %q matching ErrInvalid", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("CacheKey() = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNormalizeImageRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{in: "alpine", want: "docker.io/library/alpine:latest"},
		{in: "alpine:3.20", want: "docker.io/library/alpine:3.20"},
		{in: "user/app", want: "docker.io/user/app:latest"},
		{in: "alpine@" + dgstA, want: "docker.io/library/alpine@" + dgstA},
		{in: "localhost:5000/foo/bar", want: "localhost:5000/foo/bar:latest"},
		{in: "registry.example.com:443/team/app:v1", want: "registry.example.com:443/team/app:v1"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := source.NormalizeImageRef(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("NormalizeImageRef(%q) = %q, want %q", tc.in, got, tc.want)
			}
			// The normalised form is what the daemon side accepts.
			if _, err := source.Parse(op("docker-image://" + got)); err != nil {
				t.Errorf("Parse of normalised %q: %v", got, err)
			}
		})
	}
	if _, err := source.NormalizeImageRef("Alpine"); !errors.Is(err, source.ErrInvalid) {
		t.Errorf("NormalizeImageRef(Alpine) error = %v, want ErrInvalid", err)
	}
}

func TestManager(t *testing.T) {
	t.Parallel()
	m := source.NewManager[string]()
	m.Register("resolver", source.SchemeDockerImage, source.SchemeOCILayout)
	m.Register("puller", source.SchemeDockerImage)

	image, err := m.Identifier(op("docker-image://docker.io/library/alpine:3.20"))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := m.Resolve(image); err != nil || h != "puller" {
		t.Errorf("Resolve(docker-image) = %q, %v; want the later registration", h, err)
	}

	git, err := m.Identifier(op("git://github.com/moby/buildkit.git"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Resolve(git)
	if err == nil || err.Error() != "no handler for git" {
		t.Fatalf("Resolve(git) error = %v, want %q", err, "no handler for git")
	}
	if !errors.Is(err, source.ErrNoHandler) {
		t.Errorf("Resolve(git) error %v does not match ErrNoHandler", err)
	}

	if _, err := m.Identifier(op("nope://x")); !errors.Is(err, source.ErrNotFound) {
		t.Errorf("Identifier(nope://x) error = %v, want ErrNotFound", err)
	}
}

func TestSchemes(t *testing.T) {
	t.Parallel()
	got := source.Schemes()
	slices.Sort(got)
	want := []string{
		source.SchemeDockerImage, source.SchemeDockerImageBlob, source.SchemeGit, source.SchemeHTTP,
		source.SchemeHTTPS, source.SchemeLocal, source.SchemeOCILayout, source.SchemeOCILayoutBlob,
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Schemes() mismatch (-want +got):\n%s", diff)
	}
}
