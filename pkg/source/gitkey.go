package source

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// GitRef is one ref a remote advertises, as `git ls-remote` prints it.
type GitRef struct {
	// Name is the full ref name: "HEAD", "refs/heads/main", "refs/tags/v1".
	// A peeled annotated tag is listed a second time as "refs/tags/v2^{}",
	// with the commit the tag points at.
	Name string `json:"name"`
	// Hash is the object the ref points at (hex).
	Hash string `json:"hash"`
	// Target is the ref a symbolic ref points at ("refs/heads/main" for
	// HEAD); empty for a ref that is not symbolic.
	Target string `json:"target,omitempty"`
}

// GitResolution is what the ref of a git identifier resolved to
// (BuildKit's resolveMetadata): everything its key and its checkout need.
type GitResolution struct {
	// Ref is the fully qualified ref the commit was found under
	// ("refs/tags/v1", "refs/heads/main"), or the commit SHA itself when the
	// identifier names one, or names no ref and fetches by commit.
	Ref string `json:"ref"`
	// Checksum is the object Ref points at: the commit, or for an annotated
	// tag the tag object. It is the key's pin, as in BuildKit.
	Checksum string `json:"checksum"`
	// Commit is what to check out: Checksum, or for an annotated tag the
	// commit it points at (the peeled ref "<tag>^{}"). A tag named as a
	// partial ref ("tags/v2") is not peeled, as in BuildKit: Commit is then
	// the tag object, which a checkout peels.
	Commit string `json:"commit"`
}

// NeedsRemote reports whether resolving the identifier asks the remote for
// its refs: false when the ref is a full commit SHA, or when
// git.fetchbycommit names the commit in git.checksum.
func (id *GitIdentifier) NeedsRemote() bool {
	return !isCommitSHA(id.Ref) && !id.FetchByCommit
}

// ListedRefs keeps the refs of a remote's listing that resolving the
// identifier looks at: what `git ls-remote <remote> <ref> <ref>^{}` prints,
// plus HEAD when the identifier names no ref (its target is the default
// branch). A listing cut down this way resolves exactly as the whole one.
func (id *GitIdentifier) ListedRefs(all []GitRef) []GitRef {
	ref := id.Ref
	var out []GitRef
	if ref == "" {
		for _, r := range all {
			if r.Name == "HEAD" {
				out = append(out, r)
			}
		}
		ref = defaultBranchOf(out)
		if ref == "" {
			return out
		}
	}
	for _, r := range all {
		if r.Name != "HEAD" && (lsRemoteMatch(r.Name, ref) || lsRemoteMatch(r.Name, ref+"^{}")) {
			out = append(out, r)
		}
	}
	return out
}

// checksumHex is what BuildKit accepts as git.checksum: hex digits of
// either case, any length (a prefix of the commit).
var checksumHex = regexp.MustCompile(`^[a-fA-F0-9]+$`)

// defaultBranch finds the branch a symbolic HEAD points at.
var defaultBranch = regexp.MustCompile(`refs/heads/(\S+)`)

// Resolve resolves the identifier's ref with BuildKit's rules, from refs
// (a remote's listing, or its ListedRefs; ignored when NeedsRemote is
// false):
//
//   - a full commit SHA is the commit, with no listing;
//   - with git.fetchbycommit, git.checksum (a full SHA) is the commit, and
//     an unqualified ref is taken as the branch refs/heads/<ref>; with no
//     ref, the commit is also the ref;
//   - no ref means the default branch, the target of HEAD;
//   - otherwise the ref is looked up as "refs/<ref>" (when that is neither a
//     branch nor a tag), then as the branch refs/heads/<ref>, then as the tag
//     refs/tags/<ref>; for an annotated tag, the peeled "<tag>^{}" gives the
//     commit.
//
// git.checksum must be hex and a prefix of the commit (or of an annotated
// tag's object). Errors match ErrInvalid (a bad checksum, a mismatch, an
// object name that is no SHA) or ErrNotFound (no such ref, no default
// branch), with BuildKit's texts.
func (id *GitIdentifier) Resolve(refs []GitRef) (GitResolution, error) {
	if id.Checksum != "" && !checksumHex.MatchString(id.Checksum) {
		return GitResolution{}, invalid(fmt.Sprintf("invalid checksum %s for Git URL, expected hex commit hash", id.Checksum), nil)
	}
	if isCommitSHA(id.Ref) {
		if id.Checksum != "" && !strings.HasPrefix(id.Ref, id.Checksum) {
			return GitResolution{}, invalid(fmt.Sprintf("expected checksum to match %s, got %s", id.Checksum, id.Ref), nil)
		}
		return GitResolution{Ref: id.Ref, Checksum: id.Ref, Commit: id.Ref}, nil
	}
	if id.FetchByCommit {
		if !isCommitSHA(id.Checksum) {
			return GitResolution{}, invalid(fmt.Sprintf("git.fetchbycommit requires git.checksum to be a full commit SHA, got %q", id.Checksum), nil)
		}
		ref := id.Ref
		if ref != "" && !strings.HasPrefix(ref, "refs/") {
			ref = "refs/heads/" + ref
		}
		if ref == "" {
			// No ref: the commit is the ref, as when the identifier
			// names it (BuildKit's key is then <sha>.git#<sha> with
			// keepgitdir).
			ref = id.Checksum
		}
		return GitResolution{Ref: ref, Checksum: id.Checksum, Commit: id.Checksum}, nil
	}

	ref := id.Ref
	if ref == "" {
		if ref = defaultBranchOf(refs); ref == "" {
			return GitResolution{}, notFound(fmt.Sprintf("could not find default branch for repository: %s", id.RemoteWithoutCredentials()))
		}
	}
	var (
		partialRef      = "refs/" + strings.TrimPrefix(ref, "refs/")
		headRef         = "refs/heads/" + strings.TrimPrefix(ref, "refs/heads/")
		tagRef          = "refs/tags/" + strings.TrimPrefix(ref, "refs/tags/")
		annotatedTagRef = tagRef + "^{}"
	)
	var sha, headSha, tagSha, annotatedTagSha, usedRef string
	for _, r := range refs {
		// The order of the cases is BuildKit's: a ref that is a branch or
		// a tag is never taken as the partial ref.
		switch r.Name {
		case headRef:
			headSha = r.Hash
		case tagRef:
			tagSha = r.Hash
		case annotatedTagRef:
			annotatedTagSha = r.Hash
		case partialRef:
			sha, usedRef = r.Hash, r.Name
		}
	}
	// Like git checkout, prefer a branch when a name is ambiguous.
	if sha == "" {
		sha, usedRef = headSha, headRef
	}
	if sha != "" {
		annotatedTagSha = "" // a branch or a full ref matched: no tag to peel
	}
	if sha == "" {
		sha, usedRef = tagSha, tagRef
	}
	if sha == "" {
		return GitResolution{}, notFound(fmt.Sprintf("repository does not contain ref %s, output: %q", ref, lsRemoteOutput(refs, ref)))
	}
	if !isCommitSHA(sha) {
		return GitResolution{}, invalid(fmt.Sprintf("invalid commit sha %q", sha), nil)
	}
	commit := sha
	if annotatedTagSha != "" {
		if !isCommitSHA(annotatedTagSha) {
			return GitResolution{}, invalid(fmt.Sprintf("invalid commit sha %q", annotatedTagSha), nil)
		}
		commit = annotatedTagSha
	}
	if id.Checksum != "" && !strings.HasPrefix(sha, id.Checksum) && !strings.HasPrefix(annotatedTagSha, id.Checksum) {
		got := sha
		if annotatedTagSha != "" {
			got += " or " + annotatedTagSha
		}
		return GitResolution{}, invalid(fmt.Sprintf("expected checksum to match %s, got %s", id.Checksum, got), nil)
	}
	return GitResolution{Ref: usedRef, Checksum: sha, Commit: commit}, nil
}

// CacheKey is BuildKit's key of the identifier resolved to res
// (shaToCacheKey). It is content-addressed: the remote is not part of it.
// It starts from the commit SHA (for an annotated tag without keepgitdir,
// the commit the tag points at; with keepgitdir, the tag object, since the
// kept repository holds the tag), then appends ".git" and "#"+ref for
// keepgitdir (the fully qualified ref, or the SHA when the identifier names
// one), ":"+subdir, "(skip-submodules)", "(mtime=<v>)" for an mtime other
// than "" and "checkout", and "(bundle)" for git.checkoutbundle.
func (id *GitIdentifier) CacheKey(res GitResolution) string {
	sha, ref := res.Checksum, res.Ref
	switch {
	case isCommitSHA(res.Ref):
		sha = res.Ref
	case res.Commit != "" && res.Commit != res.Checksum && !id.KeepGitDir:
		sha = res.Commit
	}
	key := sha
	if id.KeepGitDir {
		key += ".git"
		if ref != "" {
			key += "#" + ref
		}
	}
	if id.Subdir != "" {
		key += ":" + id.Subdir
	}
	if id.SkipSubmodules {
		key += "(skip-submodules)"
	}
	if id.MTime != "" && id.MTime != GitMTimeCheckout {
		key += "(mtime=" + id.MTime + ")"
	}
	if id.CheckoutBundle {
		key += "(bundle)"
	}
	return key
}

// The values of git.mtime that BuildKit knows.
const (
	// GitMTimeCheckout sets file times to when the files were written (the
	// default).
	GitMTimeCheckout = "checkout"
	// GitMTimeCommit sets file times to the commit's committer time.
	GitMTimeCommit = "commit"
)

// RemoteWithoutCredentials is the remote with any user and password of a
// URL left out: what may be printed, stored in events, or written into a
// kept .git/config. The scp-like form keeps its user, which names an SSH
// account, not a secret.
func (id *GitIdentifier) RemoteWithoutCredentials() string {
	return RedactGitRemote(id.Remote)
}

// RedactGitRemote removes the user information from a remote URL
// ("https://user:token@host/repo" becomes "https://host/repo"). A remote
// that is not a URL is returned as it is.
func RedactGitRemote(remote string) string {
	if gitProtoPrefix.FindString(remote) == "" {
		return remote
	}
	u, err := url.Parse(remote)
	if err != nil || u.User == nil {
		return remote
	}
	u.User = nil
	return u.String()
}

// IsCommitSHA reports whether s is a full commit id: 40 lowercase hex
// digits (SHA-1) or 64 (SHA-256 repositories).
func IsCommitSHA(s string) bool { return isCommitSHA(s) }

// defaultBranchOf is the branch the symbolic HEAD of refs points at, or "".
func defaultBranchOf(refs []GitRef) string {
	for _, r := range refs {
		if r.Name != "HEAD" {
			continue
		}
		if m := defaultBranch.FindStringSubmatch(r.Target); m != nil {
			return m[1]
		}
	}
	return ""
}

// lsRemoteMatch is git ls-remote's pattern rule: a ref matches when the
// pattern is the whole name or its tail after a '/'.
func lsRemoteMatch(name, pattern string) bool {
	return name == pattern || strings.HasSuffix(name, "/"+pattern)
}

// lsRemoteOutput is what `git ls-remote <remote> <ref> <ref>^{}` prints for
// refs, for error messages.
func lsRemoteOutput(refs []GitRef, ref string) string {
	var b strings.Builder
	for _, r := range refs {
		if r.Name != "HEAD" && (lsRemoteMatch(r.Name, ref) || lsRemoteMatch(r.Name, ref+"^{}")) {
			b.WriteString(r.Hash + "\t" + r.Name + "\n")
		}
	}
	return b.String()
}

// refNotFoundError is a failure to find what a git identifier names (a
// ref, the default branch), with BuildKit's text, that matches ErrNotFound.
type refNotFoundError struct{ msg string }

func (e *refNotFoundError) Error() string { return e.msg }

// Is reports that every refNotFoundError is an ErrNotFound.
func (e *refNotFoundError) Is(target error) bool { return target == ErrNotFound }

var _ error = (*refNotFoundError)(nil)

func notFound(msg string) error { return &refNotFoundError{msg: msg} }
