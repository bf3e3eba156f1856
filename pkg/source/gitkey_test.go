package source_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// The listing of the BuildKit fixture repository (testdata/sources/git).
const (
	fxMain = "84ce3a5707faf3d46c1cd2c71e2187e37890178b"
	fxV1   = "ee0144110bb25cd77d9a9f206f9ef475271d7244"
	fxV2   = "9810617a87f11a979d8ba7ae1c4b749abe93f67c" // the tag object
)

var fixtureRefs = []source.GitRef{
	{Name: "HEAD", Hash: fxMain, Target: "refs/heads/main"},
	{Name: "refs/heads/main", Hash: fxMain},
	{Name: "refs/tags/v1", Hash: fxV1},
	{Name: "refs/tags/v2", Hash: fxV2},
	{Name: "refs/tags/v2^{}", Hash: fxMain},
}

func gitID(t *testing.T, identifier string, kv ...string) *source.GitIdentifier {
	t.Helper()
	id, err := source.Parse(op(identifier, kv...))
	if err != nil {
		t.Fatalf("Parse(%q): %v", identifier, err)
	}
	return id.(*source.GitIdentifier)
}

// The keys the BuildKit fixture lists (testdata/sources/git/README.md),
// from the fixture's listing, plus the rest of shaToCacheKey's suffixes.
func TestGitCacheKey(t *testing.T) {
	t.Parallel()
	const repo = "git://127.0.0.1/repo.git"
	for _, tc := range []struct {
		name, identifier string
		attrs            []string
		key, pin, commit string
		ref              string
	}{
		{"lightweight tag", repo + "#v1", nil, fxV1, fxV1, fxV1, "refs/tags/v1"},
		{"annotated tag is its commit", repo + "#v2", nil, fxMain, fxV2, fxMain, "refs/tags/v2"},
		{"branch and subdir", repo + "#main:sub", nil, fxMain + ":sub", fxMain, fxMain, "refs/heads/main"},
		{"keepgitdir names the full ref", repo + "#v1", []string{source.AttrKeepGitDir, "true"}, fxV1 + ".git#refs/tags/v1", fxV1, fxV1, "refs/tags/v1"},
		{"keepgitdir keeps the tag object", repo + "#v2", []string{source.AttrKeepGitDir, "true"}, fxV2 + ".git#refs/tags/v2", fxV2, fxMain, "refs/tags/v2"},
		{"default branch", repo, nil, fxMain, fxMain, fxMain, "refs/heads/main"},
		{"default branch keepgitdir", repo, []string{source.AttrKeepGitDir, "true"}, fxMain + ".git#refs/heads/main", fxMain, fxMain, "refs/heads/main"},
		{"fully qualified branch", repo + "#refs/heads/main", nil, fxMain, fxMain, fxMain, "refs/heads/main"},
		{"partial ref", repo + "#heads/main", nil, fxMain, fxMain, fxMain, "refs/heads/main"},
		{"qualified annotated tag", repo + "#refs/tags/v2", nil, fxMain, fxV2, fxMain, "refs/tags/v2"},
		{"skip submodules", repo + "#v1", []string{source.AttrGitSkipSubmodules, "true"}, fxV1 + "(skip-submodules)", fxV1, fxV1, "refs/tags/v1"},
		{"mtime checkout is the default", repo + "#v1", []string{source.AttrGitMTime, "checkout"}, fxV1, fxV1, fxV1, "refs/tags/v1"},
		{"mtime commit", repo + "#v1", []string{source.AttrGitMTime, "commit"}, fxV1 + "(mtime=commit)", fxV1, fxV1, "refs/tags/v1"},
		{"every suffix in order", repo + "#v1:sub", []string{source.AttrKeepGitDir, "true", source.AttrGitSkipSubmodules, "true", source.AttrGitMTime, "commit"},
			fxV1 + ".git#refs/tags/v1:sub(skip-submodules)(mtime=commit)", fxV1, fxV1, "refs/tags/v1"},
		{"checksum prefix", repo + "#v1", []string{source.AttrGitChecksum, "ee01441"}, fxV1, fxV1, fxV1, "refs/tags/v1"},
		{"checksum of an annotated tag's object", repo + "#v2", []string{source.AttrGitChecksum, fxV2}, fxMain, fxV2, fxMain, "refs/tags/v2"},
		{"checksum of an annotated tag's commit", repo + "#v2", []string{source.AttrGitChecksum, fxMain[:12]}, fxMain, fxV2, fxMain, "refs/tags/v2"},
		{"commit sha", repo + "#" + fxV1, nil, fxV1, fxV1, fxV1, fxV1},
		{"commit sha keepgitdir", repo + "#" + fxV1, []string{source.AttrKeepGitDir, "true"}, fxV1 + ".git#" + fxV1, fxV1, fxV1, fxV1},
		{"fetchbycommit", repo + "#main", []string{source.AttrGitFetchByCommit, "true", source.AttrGitChecksum, fxV1, source.AttrKeepGitDir, "true"},
			fxV1 + ".git#refs/heads/main", fxV1, fxV1, "refs/heads/main"},
		{"fetchbycommit qualified", repo + "#refs/tags/v1", []string{source.AttrGitFetchByCommit, "true", source.AttrGitChecksum, fxV1}, fxV1, fxV1, fxV1, "refs/tags/v1"},
		{"fetchbycommit without a ref keepgitdir", repo, []string{source.AttrGitFetchByCommit, "true", source.AttrGitChecksum, fxV1, source.AttrKeepGitDir, "true"},
			fxV1 + ".git#" + fxV1, fxV1, fxV1, fxV1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := gitID(t, tc.identifier, tc.attrs...)
			refs := fixtureRefs
			if !id.NeedsRemote() {
				refs = nil
			}
			res, err := id.Resolve(id.ListedRefs(refs))
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if diff := cmp.Diff(source.GitResolution{Ref: tc.ref, Checksum: tc.pin, Commit: tc.commit}, res); diff != "" {
				t.Errorf("resolution (-want +got):\n%s", diff)
			}
			if got := id.CacheKey(res); got != tc.key {
				t.Errorf("key = %q, want %q", got, tc.key)
			}
			// The whole listing resolves as the cut-down one.
			if full, err := id.Resolve(refs); err != nil || full != res {
				t.Errorf("full listing resolves to %+v, %v", full, err)
			}
		})
	}
}

func TestGitNeedsRemote(t *testing.T) {
	t.Parallel()
	for identifier, want := range map[string]bool{
		"git://h/r.git#v1":            true,
		"git://h/r.git":               true,
		"git://h/r.git#" + fxV1:       false,
		"git://h/r.git#" + fxV1[:39]:  true,
		"git://h/r.git#" + fxV1 + "0": true,
	} {
		if got := gitID(t, identifier).NeedsRemote(); got != want {
			t.Errorf("%s: NeedsRemote = %v, want %v", identifier, got, want)
		}
	}
	if gitID(t, "git://h/r.git#main", source.AttrGitFetchByCommit, "true", source.AttrGitChecksum, fxV1).NeedsRemote() {
		t.Error("fetchbycommit needs the remote")
	}
}

// Failures carry BuildKit's texts and classes.
func TestGitResolveErrors(t *testing.T) {
	t.Parallel()
	const repo = "git://127.0.0.1/repo.git"
	for _, tc := range []struct {
		name, identifier string
		attrs            []string
		refs             []source.GitRef
		want             string
		class            error
	}{
		{"unknown ref", repo + "#nope", nil, fixtureRefs, `repository does not contain ref nope, output: ""`, source.ErrNotFound},
		{"unknown ref shows partial matches", repo + "#v1", nil, []source.GitRef{{Name: "refs/heads/x/v1", Hash: fxV1}},
			`repository does not contain ref v1, output: "` + fxV1 + `\trefs/heads/x/v1\n"`, source.ErrNotFound},
		{"no default branch", "git://user:secret@example.com/repo.git", nil, []source.GitRef{{Name: "refs/heads/main", Hash: fxMain}},
			"could not find default branch for repository: https://example.com/repo.git", source.ErrNotFound},
		{"checksum not hex", repo + "#v1", []string{source.AttrGitChecksum, "xyz"}, fixtureRefs,
			"invalid checksum xyz for Git URL, expected hex commit hash", source.ErrInvalid},
		{"checksum mismatch", repo + "#v1", []string{source.AttrGitChecksum, "abc"}, fixtureRefs,
			"expected checksum to match abc, got " + fxV1, source.ErrInvalid},
		{"checksum mismatch annotated", repo + "#v2", []string{source.AttrGitChecksum, "abc"}, fixtureRefs,
			"expected checksum to match abc, got " + fxV2 + " or " + fxMain, source.ErrInvalid},
		{"not a commit sha", repo + "#v1", nil, []source.GitRef{{Name: "refs/tags/v1", Hash: "abc"}}, `invalid commit sha "abc"`, source.ErrInvalid},
		{"fetchbycommit without a sha", repo + "#main", []string{source.AttrGitFetchByCommit, "true", source.AttrGitChecksum, "abc"}, nil,
			`git.fetchbycommit requires git.checksum to be a full commit SHA, got "abc"`, source.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := gitID(t, tc.identifier, tc.attrs...).Resolve(tc.refs)
			if err == nil || err.Error() != tc.want || !errors.Is(err, tc.class) {
				t.Fatalf("Resolve = %v, want %q (%v)", err, tc.want, tc.class)
			}
		})
	}
}

// BuildKit prefers a branch to a tag of the same name, and a full ref
// name to both.
func TestGitResolvePrecedence(t *testing.T) {
	t.Parallel()
	refs := []source.GitRef{
		{Name: "refs/heads/x", Hash: fxMain},
		{Name: "refs/tags/x", Hash: fxV2},
		{Name: "refs/tags/x^{}", Hash: fxV1},
		{Name: "refs/pull/1/head", Hash: fxV1},
	}
	for ref, want := range map[string]source.GitResolution{
		"x": {Ref: "refs/heads/x", Checksum: fxMain, Commit: fxMain},
		// As a partial ref a tag is not peeled (BuildKit's order): the
		// commit to check out is the tag object, which checkout peels.
		"tags/x":         {Ref: "refs/tags/x", Checksum: fxV2, Commit: fxV2},
		"refs/tags/x":    {Ref: "refs/tags/x", Checksum: fxV2, Commit: fxV1},
		"pull/1/head":    {Ref: "refs/pull/1/head", Checksum: fxV1, Commit: fxV1},
		"refs/heads/x":   {Ref: "refs/heads/x", Checksum: fxMain, Commit: fxMain},
		"refs/pull/1/he": {},
	} {
		got, err := gitID(t, "git://h/r.git#"+ref).Resolve(refs)
		if want == (source.GitResolution{}) {
			if err == nil {
				t.Errorf("%s resolved to %+v", ref, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v, want %+v", ref, got, err, want)
		}
	}
}

func TestRedactGitRemote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://user:token@example.com/a.git": "https://example.com/a.git",
		"https://token@example.com/a.git":      "https://example.com/a.git",
		"git://example.com/a.git":              "git://example.com/a.git",
		"git@github.com:moby/buildkit.git":     "git@github.com:moby/buildkit.git",
	} {
		if got := source.RedactGitRemote(in); got != want {
			t.Errorf("RedactGitRemote(%q) = %q, want %q", in, got, want)
		}
	}
}

// keyShape is what every git key looks like: a SHA, then BuildKit's
// suffixes in their order.
var keyShape = regexp.MustCompile(`(?s)^([a-f0-9]{40}|[a-f0-9]{64})(\.git(#.+)?)?(:.+)?(\(skip-submodules\))?(\(mtime=.*\))?(\(bundle\))?$`)

// FuzzGitResolve: for any identifier and listing, resolving never panics,
// fails only with a classified error, and a success gives a key of
// BuildKit's shape that starts with the commit (or, with keepgitdir, the
// pinned object), a pin that is a SHA, and a commit that the listing or
// the identifier names.
func FuzzGitResolve(f *testing.F) {
	listing := func(refs []source.GitRef) string {
		var b strings.Builder
		for _, r := range refs {
			b.WriteString(r.Hash + "\t" + r.Name)
			if r.Target != "" {
				b.WriteString("\t" + r.Target)
			}
			b.WriteString("\n")
		}
		return b.String()
	}
	full := listing(fixtureRefs)
	f.Add("v1", "", "", "", "", "", full)
	f.Add("v2", "true", "", "", "", "", full)
	f.Add("", "", "", "", "", "", full)
	f.Add("main:sub", "", "84ce3a", "true", "commit", "", full)
	f.Add(fxV1, "true", "", "", "", "", "")
	f.Add("main", "true", fxV1, "", "", "true", "")
	f.Add("x", "", "", "", "", "", fxV1+"\trefs/heads/x\n"+fxV2+"\trefs/tags/x\nzz\trefs/tags/x^{}\n")
	f.Fuzz(func(t *testing.T, fragment, keep, checksum, skip, mtime, byCommit, lines string) {
		var refs []source.GitRef
		for line := range strings.SplitSeq(lines, "\n") {
			parts := strings.SplitN(line, "\t", 3)
			if len(parts) < 2 {
				continue
			}
			r := source.GitRef{Hash: parts[0], Name: parts[1]}
			if len(parts) == 3 {
				r.Target = parts[2]
			}
			refs = append(refs, r)
		}
		parsed, err := source.Parse(events.SourceOp{Identifier: "git://127.0.0.1/repo.git#" + fragment, Attrs: attrs(
			source.AttrKeepGitDir, keep, source.AttrGitChecksum, checksum, source.AttrGitSkipSubmodules, skip,
			source.AttrGitMTime, mtime, source.AttrGitFetchByCommit, byCommit)})
		if err != nil {
			return
		}
		id := parsed.(*source.GitIdentifier)
		res, err := id.Resolve(refs)
		if err != nil {
			if !errors.Is(err, source.ErrInvalid) && !errors.Is(err, source.ErrNotFound) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if again, err := id.Resolve(id.ListedRefs(refs)); err != nil || again != res {
			t.Fatalf("ListedRefs resolves to %+v, %v; the whole listing to %+v", again, err, res)
		}
		key := id.CacheKey(res)
		if !keyShape.MatchString(key) {
			t.Fatalf("key %q has not BuildKit's shape", key)
		}
		if !source.IsCommitSHA(res.Checksum) || !source.IsCommitSHA(res.Commit) {
			t.Fatalf("resolution %+v: pin or commit is no SHA", res)
		}
		first := res.Commit
		if id.KeepGitDir || source.IsCommitSHA(res.Ref) {
			first = res.Checksum
		}
		if !strings.HasPrefix(key, first) {
			t.Fatalf("key %q does not start with %s (%+v)", key, first, res)
		}
		if id.NeedsRemote() && res.Commit != res.Checksum {
			found := false
			for _, r := range refs {
				found = found || (r.Hash == res.Commit && strings.HasSuffix(r.Name, "^{}"))
			}
			if !found {
				t.Fatalf("commit %s is no peeled tag of the listing", res.Commit)
			}
		}
	})
}
