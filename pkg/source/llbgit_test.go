package source

import "testing"

func TestParseLLBGit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		remote string
		want   LLBGit
	}{
		{"git://github.com/moby/buildkit.git#v0.34.1", LLBGit{"git://github.com/moby/buildkit.git#v0.34.1", "git://github.com/moby/buildkit.git"}},
		{"https://github.com/moby/buildkit.git#main:docs", LLBGit{"git://github.com/moby/buildkit.git#main:docs", "https://github.com/moby/buildkit.git"}},
		{"ssh://git@github.com/moby/buildkit.git", LLBGit{"git://github.com/moby/buildkit.git", "ssh://git@github.com/moby/buildkit.git"}},
		{"git@github.com:moby/buildkit.git#v1", LLBGit{"git://github.com/moby/buildkit.git#v1", "git@github.com:moby/buildkit.git"}},
	} {
		got, err := ParseLLBGit(tc.remote)
		if err != nil {
			t.Errorf("ParseLLBGit(%q): %v", tc.remote, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseLLBGit(%q) = %+v, want %+v", tc.remote, got, tc.want)
		}
	}
}

func TestIsGitURL(t *testing.T) {
	t.Parallel()
	for ref, want := range map[string]bool{
		"git://host/repo":                true,
		"ssh://git@host/repo.git":        true,
		"https://host/org/repo.git#v1":   true,
		"http://host/repo.git/":          true,
		"git@host:org/repo.git":          true,
		"https://host/file.tgz":          false,
		"alpine@sha256:0123456789abcdef": false,
		"docker-image://alpine:3":        false,
		"localhost:5000/demo/app:1":      false,
		"local://context":                false,
	} {
		if got := IsGitURL(ref); got != want {
			t.Errorf("IsGitURL(%q) = %v, want %v", ref, got, want)
		}
	}
}
