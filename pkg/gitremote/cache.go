package gitremote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"

	"github.com/stevedore-dev/stevedore/pkg/source"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Cache is a directory of bare repositories, one per remote, that fetch
// only what they lack. Each repository is used by one caller at a time;
// different remotes proceed in parallel.
type Cache struct {
	dir string

	mu    sync.Mutex
	locks map[string]*repoLock
}

// repoLock is the lock of one remote's repository, shared by its waiters.
type repoLock struct {
	sem  chan struct{}
	refs int
}

// NewCache returns a cache of repositories under dir, which it creates.
func NewCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("git cache: %w", err)
	}
	return &Cache{dir: dir, locks: map[string]*repoLock{}}, nil
}

// Dir is where the bare repository of remote lives: the hex sha256 of the
// remote URL under the cache's directory.
func (c *Cache) Dir(remote string) string {
	sum := sha256.Sum256([]byte(remote))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:]))
}

// acquire waits for the lock of remote's repository, or for the end of ctx.
func (c *Cache) acquire(ctx context.Context, remote string) (release func(), err error) {
	c.mu.Lock()
	l := c.locks[remote]
	if l == nil {
		l = &repoLock{sem: make(chan struct{}, 1)}
		c.locks[remote] = l
	}
	l.refs++
	c.mu.Unlock()
	drop := func() {
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.locks, remote)
		}
		c.mu.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; drop() }, nil
	case <-ctx.Done():
		drop()
		return nil, context.Cause(ctx)
	}
}

// repo is one remote's bare repository, locked by its user until close.
type repo struct {
	remote string
	dir    string
	git    *git.Repository
	unlock func()
}

// open locks and opens the repository of remote, creating it (or creating
// it again when what is there does not open).
func (c *Cache) open(ctx context.Context, remote string) (*repo, error) {
	unlock, err := c.acquire(ctx, remote)
	if err != nil {
		return nil, err
	}
	dir := c.Dir(remote)
	r, err := git.PlainOpen(dir)
	if err != nil {
		if !errors.Is(err, git.ErrRepositoryNotExists) {
			// A repository a crash left unreadable is only a cache.
			if rerr := os.RemoveAll(dir); rerr != nil {
				unlock()
				return nil, fmt.Errorf("git cache %s: %w", dir, rerr)
			}
		}
		if r, err = git.PlainInit(dir, true); err == nil {
			// For whoever looks into the directory; fetches name the URL
			// themselves.
			_, err = r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{remote}})
		}
	}
	if err != nil {
		unlock()
		return nil, fmt.Errorf("git cache %s: %w", dir, err)
	}
	return &repo{remote: remote, dir: dir, git: r, unlock: unlock}, nil
}

func (r *repo) close() { r.unlock() }

// Fetch is one fetch a checkout made.
type Fetch struct {
	// Remote is the repository fetched from.
	Remote string
	// Want is what was asked for: a ref name, a commit, or
	// "refs/heads/*,refs/tags/*" when everything was.
	Want string
	// Objects counts the objects the remote sent.
	Objects int
}

// has reports whether the repository holds the object h.
func (r *repo) has(h plumbing.Hash) bool {
	return r.git.Storer.HasEncodedObject(h) == nil
}

// ensure makes sure the repository holds want (a commit, or the tag object
// a commit was named by), fetching only when it does not: first ref (a
// fully qualified ref name, when there is one), then want itself (when the
// remote allows fetching by commit), then every branch and tag. Fetched refs
// keep their names, so that later fetches offer them as haves.
func (r *repo) ensure(ctx context.Context, ref string, want plumbing.Hash, auth Auth) ([]Fetch, error) {
	if r.has(want) {
		return nil, nil
	}
	var fetches []Fetch
	try := func(what string, specs ...config.RefSpec) (bool, error) {
		before := r.packs()
		remote := git.NewRemote(r.git.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{r.remote}})
		err := remote.FetchContext(ctx, &git.FetchOptions{RefSpecs: specs, Tags: git.NoTags, Force: true, Auth: auth.method(r.remote)})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			if cause := context.Cause(ctx); cause != nil {
				return false, cause
			}
			return false, remoteError(r.remote, err)
		}
		fetches = append(fetches, Fetch{Remote: r.remote, Want: what, Objects: r.objectsSince(before)})
		r.peelTags()
		return r.has(want), nil
	}
	// nextWay reports whether a failed way leaves hope for the next one: the
	// ref is gone, or the remote does not fetch by commit (it says so, or
	// refuses the commit as "not our ref").
	nextWay := func(err error, byCommit bool) bool {
		return errors.Is(err, git.NoMatchingRefSpecError{}) || errors.Is(err, git.ErrExactSHA1NotSupported) ||
			(byCommit && context.Cause(ctx) == nil)
	}
	if strings.HasPrefix(ref, "refs/") {
		ok, err := try(ref, config.RefSpec("+"+ref+":"+ref))
		if ok || (err != nil && !nextWay(err, false)) {
			return fetches, err
		}
	}
	ok, err := try(want.String(), config.RefSpec("+"+want.String()+":refs/stevedore/commits/"+want.String()))
	if ok || (err != nil && !nextWay(err, true)) {
		return fetches, err
	}
	ok, err = try("refs/heads/*,refs/tags/*", "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
	if ok || err != nil {
		return fetches, err
	}
	name := ref
	if name == "" {
		name = want.String()
	}
	return fetches, newError(r.remote, failure.KindNotFound,
		"fetched ref %s does not match expected commit %s and commit can not be found in the repository", name, want)
}

// peeledPrefix names the refs that point at the commits of annotated tags.
const peeledPrefix = "refs/stevedore/peeled/"

// peelTags gives every annotated tag of the repository a ref to its
// commit (refs/stevedore/peeled/tags/<name>). A fetch offers local refs
// as haves, and a remote takes a tag object as a have for nothing but the
// tag: without the commit's ref, a repository that holds a tag and its
// history would be sent that history again.
func (r *repo) peelTags() {
	iter, err := r.git.Storer.IterReferences()
	if err != nil {
		return
	}
	_ = iter.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().String()
		if ref.Type() != plumbing.HashReference || !strings.HasPrefix(name, "refs/tags/") {
			return nil
		}
		tag, err := r.git.TagObject(ref.Hash())
		if err != nil {
			return nil // a lightweight tag, or not there
		}
		commit, err := tag.Commit()
		if err != nil {
			return nil
		}
		peeled := plumbing.ReferenceName(peeledPrefix + strings.TrimPrefix(name, "refs/"))
		if cur, err := r.git.Storer.Reference(peeled); err == nil && cur.Hash() == commit.Hash {
			return nil
		}
		_ = r.git.Storer.SetReference(plumbing.NewHashReference(peeled, commit.Hash))
		return nil
	})
}

// packs lists the repository's pack files.
func (r *repo) packs() map[string]bool {
	entries, _ := os.ReadDir(filepath.Join(r.dir, "objects", "pack"))
	out := make(map[string]bool, len(entries))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".idx") {
			out[e.Name()] = true
		}
	}
	return out
}

// objectsSince counts the objects of the packs that are not in before.
func (r *repo) objectsSince(before map[string]bool) int {
	n := 0
	for name := range r.packs() {
		if before[name] {
			continue
		}
		f, err := os.Open(filepath.Join(r.dir, "objects", "pack", name)) //nolint:gosec // G304: a pack index of the cache's own repository
		if err != nil {
			continue
		}
		idx := idxfile.NewMemoryIndex()
		if idxfile.NewDecoder(f).Decode(idx) == nil {
			if c, err := idx.Count(); err == nil {
				n += int(c)
			}
		}
		_ = f.Close()
	}
	return n
}

// validCommit parses a full SHA-1 commit id.
func validCommit(remote, s string) (plumbing.Hash, error) {
	if len(s) == 64 && source.IsCommitSHA(s) {
		return plumbing.ZeroHash, newError(remote, failure.KindInvalid, "commit %s: SHA-256 repositories are not supported", s)
	}
	if len(s) != 40 || !source.IsCommitSHA(s) {
		return plumbing.ZeroHash, newError(remote, failure.KindInvalid, "invalid commit sha %q", s)
	}
	return plumbing.NewHash(s), nil
}
