package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/gitremote"
	"github.com/stevedore-dev/stevedore/pkg/session/secret"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// GitCheckouts checks git commits out into directories.
type GitCheckouts interface {
	// Checkout writes a commit's tree into req.Dir, fetching what is
	// missing. Its errors match the failure classes (see gitremote.Error).
	Checkout(ctx context.Context, req gitremote.CheckoutRequest) (gitremote.CheckoutResult, error)
}

var _ GitCheckouts = (*gitremote.Cache)(nil)

// Secrets reads the Authorization header of a source's requests from the
// build's client session (pkg/session); the header is used for the
// request at hand and kept nowhere.
type Secrets interface {
	// Authorization returns the header the secrets of a give, "" for
	// none. Errors: a Required secret that cannot be read (permanent,
	// BuildKit's "failed to retrieve HTTP auth secret …"), or a failed
	// request (retryable).
	Authorization(ctx context.Context, a events.Auth) (string, error)
}

var (
	_ Secrets = (*secret.Client)(nil)
	_ Secrets = secret.Sessionless{}
)

// authorization is the header a gives this node's requests; "" for a
// nil a.
func (h *Handler) authorization(ctx context.Context, a *events.Auth) (string, error) {
	if a == nil {
		return "", nil
	}
	return h.secrets.Authorization(ctx, *a)
}

// gitCacheDir is where, under the data dir, the node keeps one bare
// repository per remote (gitremote.Cache).
const gitCacheDir = "git"

// gitFiller checks a commit out into a snapshot, as BuildKit's git source
// does: the tree of the commit (only Subdir when set), submodules unless
// skipped, .git when kept (and no Subdir), file times of the checkout, or
// of the commit with git.mtime=commit. The commit is fetched into the
// node's cache of the remote first, when it is not there already.
func (h *Handler) gitFiller(gc *events.GitContent) (filler, error) {
	if h.git == nil {
		return nil, failure.Invalid(errors.New("git snapshots are not configured on this node"))
	}
	if err := gitremote.CheckRemote(gc.Remote); err != nil {
		return nil, failure.Invalid(fmt.Errorf("git snapshot: %w", err))
	}
	if !source.IsCommitSHA(gc.Commit) {
		return nil, failure.Invalid(fmt.Errorf("git snapshot: invalid commit %q", gc.Commit))
	}
	if gc.Subdir != "" && strings.TrimPrefix(path.Join("/", gc.Subdir), "/") != gc.Subdir {
		return nil, failure.Invalid(fmt.Errorf("git snapshot: subdir %q is not clean and relative", gc.Subdir))
	}
	req := gitremote.CheckoutRequest{
		Remote: gc.Remote, Ref: gc.Ref, Commit: gc.Commit, Subdir: gc.Subdir,
		KeepGitDir: gc.KeepGitDir, SkipSubmodules: gc.SkipSubmodules,
		CommitTime: gc.MTime == source.GitMTimeCommit,
	}
	return func(ctx context.Context, dir string) error {
		header, err := h.authorization(ctx, gc.Auth)
		if err != nil {
			return err
		}
		req.Dir = dir
		req.Auth = gitremote.AuthOf(header, gc.Auth)
		started := h.now()
		res, err := h.git.Checkout(ctx, req)
		emitFetches(ctx, res.Fetches, started, h.now())
		if err != nil {
			return fmt.Errorf("git snapshot of %s at %s: %w", gc.Remote, gc.Commit, err)
		}
		return nil
	}, nil
}

// emitFetches reports each fetch a checkout made, with the objects
// received as Current: none when the node's cache had everything.
func emitFetches(ctx context.Context, fetches []gitremote.Fetch, started, completed time.Time) {
	vertex := ""
	if e, ok := bus.Input(ctx); ok {
		if sr, ok := e.Data.(events.SnapshotRequested); ok {
			vertex = sr.Source.Identifier
		}
	}
	for _, f := range fetches {
		bus.Emit(ctx, events.Progress{Vertex: vertex, ID: "fetch " + f.Remote + " " + f.Want, Action: "done",
			Current: int64(f.Objects), Started: &started, Completed: &completed})
	}
}
