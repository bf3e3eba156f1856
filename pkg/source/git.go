package source

import (
	// BuildKit's daemon links sha512, so sha384 and sha512 digests validate
	// there; import it so that they validate here whatever else is linked.
	_ "crypto/sha512"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/containerd/containerd/v2/pkg/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// GitIdentifier is a parsed git:// identifier: a commit of a remote
// repository, optionally one of its directories.
type GitIdentifier struct {
	// Remote is the URL git fetches from, without fragment and query:
	// "https://host/path", "ssh://user@host/path", "git://host/path" or the
	// scp-like "user@host:path". An identifier that is not one of those gets
	// "https://" prepended. git.fullurl replaces it verbatim.
	Remote string
	// Ref is the branch, tag or commit from the fragment "#<ref>:<subdir>".
	// Empty means the remote's default branch.
	Ref string
	// Checksum is git.checksum: the commit (or a prefix of it) the ref must
	// resolve to. Empty means any.
	Checksum string
	// Subdir is the directory from the fragment, cleaned and relative (no
	// leading "/", no ".."). Empty means the whole repository.
	Subdir string
	// KeepGitDir is git.keepgitdir: keep the .git directory in the snapshot.
	KeepGitDir bool
	// AuthTokenSecret is git.authtokensecret: the name of the client
	// secret holding a token for HTTP authentication (see Auth). Empty
	// means none; BuildKit's LLB client, like Stevedore's CLI, sets
	// DefaultGitAuthTokenSecret.
	AuthTokenSecret string
	// AuthHeaderSecret is git.authheadersecret: the name of the client
	// secret holding a whole Authorization header. Empty means none; the
	// clients set DefaultGitAuthHeaderSecret.
	AuthHeaderSecret string
	// MountSSHSock is git.mountsshsock: the id of the SSH agent socket the
	// client forwards. Empty means no agent.
	MountSSHSock string
	// KnownSSHHosts is git.knownsshhosts: known_hosts lines for SSH remotes.
	// Empty means none.
	KnownSSHHosts string
	// SkipSubmodules is git.skipsubmodules: do not check out submodules.
	SkipSubmodules bool
	// MTime is git.mtime: "checkout" sets file times to the checkout time,
	// "commit" to the commit time. Empty means "checkout". Other values are
	// kept as given and end up in the key, as in BuildKit.
	MTime string
	// FetchByCommit is git.fetchbycommit: fetch the commit named by Checksum
	// without asking the remote what the ref points to.
	FetchByCommit bool
	// Bundle is git.bundle: a "docker-image+blob://…@sha256:…" or
	// "oci-layout+blob://…@sha256:…" locator of a git bundle to fetch the
	// commit from instead of the remote. Empty means the remote.
	Bundle string
	// BundleOCISessionID is oci.session: the client session of an
	// oci-layout+blob bundle. Empty means any session of the build.
	BundleOCISessionID string
	// BundleOCIStoreID is oci.store: overrides the layout store name taken
	// from an oci-layout+blob bundle locator. Empty means that name.
	BundleOCIStoreID string
	// CheckoutBundle is git.checkoutbundle: produce a single file "bundle"
	// instead of a work tree.
	CheckoutBundle bool
	// VerifySignature holds the git.sig.* attributes. Nil means signatures
	// are not checked.
	VerifySignature *GitSignatureVerifyOptions
}

// GitSignatureVerifyOptions says how a git source checks signatures
// (git.sig.*).
type GitSignatureVerifyOptions struct {
	// PubKey is git.sig.pubkey: the armored public key(s) to verify with.
	PubKey []byte
	// RejectExpiredKeys is git.sig.rejectexpired: fail on expired keys.
	RejectExpiredKeys bool
	// RequireSignedTag is git.sig.requiresignedtag: the ref must be a signed
	// tag.
	RequireSignedTag bool
	// IgnoreSignedTag is git.sig.ignoresignedtag: verify the commit's own
	// signature even when a signed tag is present.
	IgnoreSignedTag bool
}

var _ Identifier = (*GitIdentifier)(nil)

// Scheme implements Identifier.
func (*GitIdentifier) Scheme() string { return SchemeGit }

// String implements Identifier: "git://" + host + the cleaned path, then
// "#" + ref and ":" + subdir when either is set. Scheme, credentials and
// query are dropped, so identifiers that name the same repository the same
// way print the same. A '%' or control byte anywhere, and a '?' or '#' in the
// path, are percent-encoded so that the result parses back to the same
// identifier (BuildKit prints them raw; ordinary names are unaffected).
func (id *GitIdentifier) String() string {
	s := SchemeGit + "://"
	if u, err := parseGitURL(id.Remote); err == nil {
		s += escapeURLPart(u.host, "") + escapeURLPart(path.Join("/", u.path), "?#")
	} else {
		s += id.Remote
	}
	if id.Ref != "" || id.Subdir != "" {
		s += "#" + escapeURLPart(id.Ref, "")
		if id.Subdir != "" {
			s += ":" + escapeURLPart(id.Subdir, "")
		}
	}
	return s
}

func init() {
	registerScheme(SchemeSpec{Name: SchemeGit, Route: events.ComponentPuller, Content: ContentGit, parse: parseGit})
}

func parseGit(_ string, ref string, attrs map[string]string, _ *ocispec.Platform) (Identifier, error) {
	if !isGitTransport(ref) {
		ref = "https://" + ref
	}
	u, err := parseGitURL(ref)
	if err != nil {
		return nil, err
	}
	id := &GitIdentifier{Remote: u.remote, Ref: u.ref, Subdir: u.subdir}
	sig := func() *GitSignatureVerifyOptions {
		if id.VerifySignature == nil {
			id.VerifySignature = &GitSignatureVerifyOptions{}
		}
		return id.VerifySignature
	}
	for k, v := range attrs {
		switch k {
		case AttrKeepGitDir:
			id.KeepGitDir = v == "true"
		case AttrFullRemoteURL:
			if !isGitTransport(v) {
				v = "https://" + v
			}
			if _, err := parseGitURL(v); err != nil {
				// The cause is kept for errors.Is but not printed: it
				// repeats the URL, credentials included.
				return nil, &Error{Msg: "failed to parse git.fullurl", Err: err}
			}
			id.Remote = v
		case AttrAuthHeaderSecret:
			id.AuthHeaderSecret = v
		case AttrAuthTokenSecret:
			id.AuthTokenSecret = v
		case AttrKnownSSHHosts:
			id.KnownSSHHosts = v
		case AttrMountSSHSock:
			id.MountSSHSock = v
		case AttrGitChecksum:
			id.Checksum = v
		case AttrGitSkipSubmodules:
			id.SkipSubmodules = v == "true"
		case AttrGitMTime:
			id.MTime = v
		case AttrGitFetchByCommit:
			id.FetchByCommit = v == "true"
		case AttrGitBundle:
			id.Bundle = v
		case AttrGitCheckoutBundle:
			id.CheckoutBundle = v == "true"
		case AttrOCILayoutSessionID:
			id.BundleOCISessionID = v
		case AttrOCILayoutStoreID:
			id.BundleOCIStoreID = v
		case AttrGitSignaturePubKey:
			sig().PubKey = []byte(v)
		case AttrGitSignatureRejectExp:
			sig().RejectExpiredKeys = v == "true"
		case AttrGitSignatureRequireTag:
			sig().RequireSignedTag = v == "true"
		case AttrGitSignatureIgnoreTag:
			sig().IgnoreSignedTag = v == "true"
		}
	}
	if err := id.validate(); err != nil {
		return nil, err
	}
	return id, nil
}

// validate applies BuildKit's parse-time checks (bundle checks in BuildKit's
// order) plus the ref/checksum agreement BuildKit checks when resolving.
func (id *GitIdentifier) validate() error {
	// A ref is passed to git as an argument; one that starts with "-"
	// would be read as an option.
	if strings.HasPrefix(id.Ref, "-") {
		return invalid(fmt.Sprintf("invalid git ref %q", id.Ref), nil)
	}
	if id.Bundle != "" {
		if err := validateBundleLocator(id.Bundle); err != nil {
			return err
		}
		if id.Checksum == "" {
			return invalid("git.bundle requires git.checksum to be set", nil)
		}
	}
	// BuildKit checks this for bundles while parsing and for every other
	// source when it resolves the ref; checking it here fails earlier with
	// the same message.
	if id.Ref != "" && id.Checksum != "" && isCommitSHA(id.Ref) && !strings.HasPrefix(id.Ref, id.Checksum) {
		return invalid(fmt.Sprintf("expected checksum to match %s, got %s", id.Checksum, id.Ref), nil)
	}
	if id.CheckoutBundle {
		if id.KeepGitDir {
			return invalid("git.checkoutbundle is incompatible with git.keepgitdir", nil)
		}
		if id.Subdir != "" {
			return invalid("git.checkoutbundle is incompatible with git.subdir", nil)
		}
	}
	return nil
}

// validateBundleLocator checks a git.bundle value: a blob identifier of one
// of the two blob schemes, with a sha256 digest.
func validateBundleLocator(raw string) error {
	scheme, body, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return invalid(fmt.Sprintf("failed to parse git.bundle locator %q: missing scheme", raw), nil)
	}
	if scheme != SchemeDockerImageBlob && scheme != SchemeOCILayoutBlob {
		return invalid(fmt.Sprintf("git.bundle locator scheme %q is not supported; expected %q or %q",
			scheme, SchemeDockerImageBlob, SchemeOCILayoutBlob), nil)
	}
	spec, err := reference.Parse(body)
	if err != nil {
		return invalid(fmt.Sprintf("failed to parse git.bundle locator %q", raw), err)
	}
	dgst := spec.Digest()
	if err := dgst.Validate(); err != nil {
		return invalid(fmt.Sprintf("failed to parse git.bundle locator %q: invalid digest", raw), err)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return invalid(fmt.Sprintf("git.bundle locator %q: digest algorithm %q not supported, expected %q",
			raw, dgst.Algorithm(), digest.SHA256), nil)
	}
	return nil
}

// commitSHA matches a full commit id: 40 hex digits (SHA-1) or 64 (SHA-256
// repositories).
var commitSHA = regexp.MustCompile(`^[a-f0-9]{40}$|^[a-f0-9]{64}$`)

func isCommitSHA(s string) bool { return commitSHA.MatchString(s) }

// The git transports BuildKit accepts.
var gitProtocols = map[string]bool{"http": true, "https": true, "ssh": true, "git": true}

var (
	// gitProtoPrefix matches an explicit "<proto>://".
	gitProtoPrefix = regexp.MustCompile(`^[a-zA-Z0-9]+://`)
	// gitSCPURL matches the scp-like form user@host:path[?query][#fragment].
	gitSCPURL = regexp.MustCompile(`^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$`)
)

// isGitTransport reports whether s names a git remote as it is: a supported
// "<proto>://" or the scp-like form. Anything else gets "https://".
func isGitTransport(s string) bool {
	if proto := gitProtoPrefix.FindString(s); proto != "" {
		return gitProtocols[strings.ToLower(strings.TrimSuffix(proto, "://"))]
	}
	return gitSCPURL.MatchString(s)
}

// gitURL is the part of a parsed git remote that identifiers use.
type gitURL struct {
	// host and path locate the repository; path is as parsed (URL-decoded
	// for URLs, raw for the scp-like form).
	host, path string
	// ref and subdir come from the fragment; subdir is cleaned.
	ref, subdir string
	// remote is the URL without fragment and query.
	remote string
}

// parseGitURL parses a remote like BuildKit's gitutil.ParseURL and splits
// the fragment into ref and cleaned subdir.
func parseGitURL(remote string) (*gitURL, error) {
	var u *gitURL
	if proto := gitProtoPrefix.FindString(remote); proto != "" {
		proto = strings.ToLower(strings.TrimSuffix(proto, "://"))
		if !gitProtocols[proto] {
			// BuildKit wraps its sentinel with the protocol as context.
			return nil, invalid(proto+": invalid protocol", nil)
		}
		parsed, err := url.Parse(remote)
		if err != nil {
			return nil, invalidCause(err)
		}
		bare := *parsed
		bare.Fragment, bare.RawFragment, bare.RawQuery = "", "", ""
		u = &gitURL{host: parsed.Host, path: parsed.Path, remote: bare.String()}
		u.ref, u.subdir, _ = strings.Cut(parsed.Fragment, ":")
	} else if m := gitSCPURL.FindStringSubmatch(remote); m != nil {
		// The query is dropped, but one that does not parse makes BuildKit's
		// scp parser fail, and ParseURL then knows no protocol for the
		// string.
		if _, err := url.ParseQuery(m[4]); err != nil {
			return nil, invalid("unknown protocol", nil)
		}
		u = &gitURL{host: m[2], path: m[3], remote: m[1] + "@" + m[2] + ":" + m[3]}
		u.ref, u.subdir, _ = strings.Cut(m[5], ":")
	} else {
		return nil, invalid("unknown protocol", nil)
	}
	u.subdir = strings.TrimPrefix(path.Join("/", u.subdir), "/")
	return u, nil
}

// escapeURLPart percent-encodes the bytes of s that a URL parser would not
// give back unchanged: '%', control bytes, and the bytes in extra.
func escapeURLPart(s, extra string) string {
	needs := func(c byte) bool {
		return c == '%' || c < 0x20 || c == 0x7f || strings.IndexByte(extra, c) >= 0
	}
	i := 0
	for i < len(s) && !needs(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if c := s[i]; needs(c) {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
