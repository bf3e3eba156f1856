package puller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// GitLister lists the refs of a git remote, as `git ls-remote` does.
type GitLister interface {
	// ListRefs returns the refs remote advertises, asked with auth's
	// header. Its errors match the failure classes: failure.ErrNotFound for a
	// repository that does not exist, failure.ErrUnauthorized when it wants
	// (other) credentials, failure.ErrInvalid for a remote that cannot be
	// read, failure.ErrUnavailable otherwise.
	ListRefs(ctx context.Context, remote string, auth gitremote.Auth) ([]source.GitRef, error)
}

// GitListerFunc adapts a function to GitLister.
type GitListerFunc func(ctx context.Context, remote string, auth gitremote.Auth) ([]source.GitRef, error)

// ListRefs calls f.
func (f GitListerFunc) ListRefs(ctx context.Context, remote string, auth gitremote.Auth) ([]source.GitRef, error) {
	return f(ctx, remote, auth)
}

var _ GitLister = GitListerFunc(gitremote.List)

// registerGit makes the handler compute the keys of git sources, listing
// remotes with go-git (no git binary).
func (h *Handler) registerGit() {
	h.git = GitListerFunc(gitremote.List)
	h.manager.Register(h.gitKey, source.SchemeGit)
}

// gitListing is what the fleet stores (in events.BucketManifests, under
// flightKey("git", remote, ref)) for one ref of a remote: the lines of the
// remote's listing that resolve it, and when the remote was asked.
type gitListing struct {
	// Refs are source.GitIdentifier.ListedRefs of the listing.
	Refs []source.GitRef `json:"refs"`
	// ListedAt is when the listing started; a request made after it lists
	// again.
	ListedAt time.Time `json:"listedAt"`
}

// gitKey is the one key of a git source, index 0, BuildKit's: the commit
// the ref resolves to (ls-remote, or none for a commit SHA or
// git.fetchbycommit), plus keepgitdir, subdir, skip-submodules and mtime
// suffixes. A miss asks for a content snapshot of the checkout.
func (h *Handler) gitKey(ctx context.Context, id source.Identifier, in events.CacheKeyRequested) ([]events.Event, error) {
	g := id.(*source.GitIdentifier)
	if in.Index != 0 {
		return nil, failure.Invalid(fmt.Errorf("git has no cache key index %d", in.Index))
	}
	if err := gitSupported(g); err != nil {
		return nil, err
	}
	remote := g.RemoteWithoutCredentials()
	auth := g.Auth(in.Session)
	var refs []source.GitRef
	sight := &sighted{identity: lineage.GitIdentity(in.Source.Identifier)}
	if g.NeedsRemote() {
		header, err := h.authorization(ctx, auth)
		if err != nil {
			return nil, err
		}
		sight.seen.Tag, sight.private = lineage.GitRef(in.Source.Identifier, g.Ref), header != ""
		if refs, err = h.listGit(ctx, g, remote, gitremote.AuthOf(header, auth), requestedAt(ctx, h.now())); err != nil {
			return nil, err
		}
	}
	res, err := g.Resolve(refs)
	if err != nil {
		return nil, err
	}
	key := g.CacheKey(res)
	ck := events.CacheKey{Index: 0, Key: key, Digest: source.SolverDigest(key), Pin: res.Checksum, Done: true}
	content := &events.Content{Git: &events.GitContent{
		Remote: remote, Ref: res.Ref, Commit: res.Commit, Subdir: g.Subdir,
		KeepGitDir: g.KeepGitDir, SkipSubmodules: g.SkipSubmodules, MTime: g.MTime, Auth: auth,
	}}
	return h.contentKey(ctx, in, ck, content, sight)
}

// gitSupported refuses what a git source can ask for that this fleet does
// not do yet: a forwarded SSH agent cannot be found (BuildKit's message),
// and bundles and signature verification are not implemented.
func gitSupported(g *source.GitIdentifier) error {
	switch {
	case g.MountSSHSock != "":
		return failure.Invalid(fmt.Errorf("no SSH key %q forwarded from the client", g.MountSSHSock))
	case g.Bundle != "" || g.CheckoutBundle:
		return failure.Invalid(errors.New("git bundles (git.bundle, git.checkoutbundle) are not supported yet"))
	case g.VerifySignature != nil:
		return failure.Invalid(errors.New("git signature verification (git.sig.*) is not supported yet"))
	}
	if err := gitremote.CheckRemote(g.Remote); err != nil {
		return failure.Invalid(err)
	}
	return nil
}

// listGit returns the refs of the remote's listing that resolve g's ref,
// listing it once for all requests made before the listing started,
// across the fleet. A listing with credentials is never shared: it lists
// for this request alone, so that a build without them never learns what
// only they may read.
func (h *Handler) listGit(ctx context.Context, g *source.GitIdentifier, remote string, auth gitremote.Auth, requestedAt time.Time) ([]source.GitRef, error) {
	if auth.Header != "" {
		all, err := h.git.ListRefs(ctx, remote, auth)
		if err != nil {
			return nil, err
		}
		return g.ListedRefs(all), nil
	}
	accept := func(v []byte) bool {
		var l gitListing
		if json.Unmarshal(v, &l) != nil {
			return false
		}
		return !l.ListedAt.Before(requestedAt)
	}
	res, err := h.flight.Do(ctx, flightKey("git", remote, g.Ref), accept, func(ctx context.Context) ([]byte, error) {
		at := h.now()
		all, err := h.git.ListRefs(ctx, remote, auth)
		if err != nil {
			return nil, err
		}
		return json.Marshal(gitListing{Refs: g.ListedRefs(all), ListedAt: at})
	})
	if err != nil {
		return nil, err
	}
	var l gitListing
	if err := json.Unmarshal(res.Value, &l); err != nil {
		return nil, fmt.Errorf("stored listing of %s#%s: %w", remote, g.Ref, err)
	}
	return l.Refs, nil
}
