package source

import (
	"net/url"
	"path"
	"strings"
)

// LLBGit is what BuildKit's LLB client (llb.Git) sends for a git remote
// named by a URL with its transport: an identifier that carries no
// transport (BuildKit's identifiers name host and path, so https and ssh
// remotes of one repository have one identifier) and the URL itself as
// git.fullurl, which says how to reach it.
type LLBGit struct {
	// Identifier is "git://<host>/<path>[#<ref>[:<subdir>]]".
	Identifier string
	// FullURL is the remote without its fragment: git.fullurl.
	FullURL string
}

// ParseLLBGit returns what llb.Git sends for remote, a git URL with its
// transport and an optional "#<ref>[:<subdir>]" fragment:
// "git://host/repo.git", "https://host/repo.git", "ssh://git@host/repo.git"
// or the scp-like "git@host:repo.git". Errors are BuildKit's parse errors.
func ParseLLBGit(remote string) (LLBGit, error) {
	u, err := parseGitURL(remote)
	if err != nil {
		return LLBGit{}, err
	}
	id := SchemeGit + "://" + u.host + path.Join("/", u.path)
	if u.ref != "" || u.subdir != "" {
		id += "#" + u.ref
		if u.subdir != "" {
			id += ":" + u.subdir
		}
	}
	return LLBGit{Identifier: id, FullURL: u.remote}, nil
}

// IsGitURL reports whether ref is a git remote with its transport, as a
// client takes it: git:// and ssh:// URLs, http(s) URLs whose path ends in
// ".git", and the scp-like user@host:path (not an image reference pinned
// by digest, name@sha256:…).
func IsGitURL(ref string) bool {
	if proto := gitProtoPrefix.FindString(ref); proto != "" {
		switch strings.ToLower(strings.TrimSuffix(proto, "://")) {
		case SchemeGit, "ssh":
			return true
		case SchemeHTTP, SchemeHTTPS:
			u, err := url.Parse(ref)
			return err == nil && strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), ".git")
		}
		return false
	}
	m := gitSCPURL.FindStringSubmatch(ref)
	if m == nil {
		return false
	}
	switch m[2] {
	case "sha256", "sha384", "sha512":
		return false
	}
	return true
}
