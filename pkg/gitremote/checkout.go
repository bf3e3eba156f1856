package gitremote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// CheckoutRequest says what Checkout writes.
type CheckoutRequest struct {
	// Remote is the repository, an http, https or git URL (see
	// CheckRemote).
	Remote string
	// Ref is the fully qualified ref the commit was resolved from
	// ("refs/tags/v1", "refs/heads/main"). It is what is fetched when the
	// commit is missing, and what a kept .git holds. Empty, or a commit
	// SHA, fetches by commit.
	Ref string
	// Commit is the full SHA-1 of the commit to check out. An annotated
	// tag's object is accepted and peeled to its commit.
	Commit string
	// Subdir, when set, is the directory of the tree whose contents become
	// the top of Dir. It may lead into a submodule. Empty means the whole
	// tree.
	Subdir string
	// KeepGitDir writes Dir/.git as well: a repository holding the commit
	// (shallow, as `git fetch --depth=1` makes it), Ref pointing at it (at
	// the tag object for an annotated tag), a detached HEAD at the commit,
	// an index of the files written, and origin set to Remote. As in
	// BuildKit, it has no effect with a Subdir.
	KeepGitDir bool
	// SkipSubmodules leaves every submodule an empty directory. False
	// checks submodules out, recursively, at the commits the tree records,
	// from the URLs .gitmodules gives (relative ones against the URL of the
	// repository that has the submodule); only http, https and git URLs.
	SkipSubmodules bool
	// CommitTime sets the times of everything written (.git included) to
	// the commit's committer time. False leaves them at when the files were
	// written (BuildKit's default, git.mtime=checkout).
	CommitTime bool
	// Dir is the directory to write into. It must exist and be empty.
	Dir string
	// Auth is the header fetches send, to the remote and to the
	// submodules in its scope. The zero Auth fetches without credentials.
	Auth Auth
}

// CheckoutResult is what Checkout did.
type CheckoutResult struct {
	// Commit is the commit written (the peeled commit when Commit named an
	// annotated tag).
	Commit string
	// CommitTime is its committer time.
	CommitTime time.Time
	// Fetches are the fetches made, in order; none when every repository
	// (the remote's and its submodules') had its commit already.
	Fetches []Fetch
}

// MaxSubmoduleDepth bounds how deep submodules of submodules go.
const MaxSubmoduleDepth = 8

// Checkout writes the tree of req.Commit into req.Dir (see
// CheckoutRequest), fetching into the cache what it lacks. Regular files
// are written 0644, executable ones 0755, directories 0755, symlinks as
// symlinks; nothing is ever written outside Dir, and tree entries git
// itself refuses (".git", "..", names with "/") fail the checkout.
//
// It fails with an *Error: failure.KindInvalid for a remote CheckRemote refuses,
// a malformed commit or a tree that cannot be written, failure.KindNotFound for a
// commit, subdir or submodule URL that does not exist, and the kinds of
// List for the remote's own failures.
func (c *Cache) Checkout(ctx context.Context, req CheckoutRequest) (CheckoutResult, error) {
	if err := CheckRemote(req.Remote); err != nil {
		return CheckoutResult{}, err
	}
	commit, err := validCommit(req.Remote, req.Commit)
	if err != nil {
		return CheckoutResult{}, err
	}
	subdir := strings.Trim(path.Clean("/"+req.Subdir), "/")
	root, err := os.OpenRoot(req.Dir)
	if err != nil {
		return CheckoutResult{}, err
	}
	defer func() { _ = root.Close() }()
	w := &writer{cache: c, root: root, skipSubmodules: req.SkipSubmodules, keep: req.KeepGitDir && subdir == "", auth: req.Auth}
	if err := w.write(ctx, job{remote: req.Remote, ref: req.Ref, commit: commit, treePath: subdir, out: "."}, 0); err != nil {
		return CheckoutResult{Fetches: w.fetches}, err
	}
	res := CheckoutResult{Commit: w.top.Hash.String(), CommitTime: w.top.Committer.When, Fetches: w.fetches}
	mtime := res.CommitTime
	if req.CommitTime {
		if err := setTimes(req.Dir, mtime, false); err != nil {
			return res, err
		}
	}
	if w.keep {
		if err := c.writeGitDir(ctx, req, w.top, w.index, root); err != nil {
			return res, err
		}
	}
	if req.CommitTime {
		if err := setTimes(req.Dir, mtime, true); err != nil {
			return res, err
		}
	}
	return res, nil
}

// job is one tree to write: the tree at treePath of a commit of a remote,
// into the directory out (relative to the checkout's root).
type job struct {
	remote, ref string
	commit      plumbing.Hash
	treePath    string
	out         string
}

// gitlink is a submodule entry of a tree.
type gitlink struct {
	// repoPath is its path in its repository; out is where it goes.
	repoPath, out string
	// commit is the commit the tree records.
	commit plumbing.Hash
}

// writer writes one checkout.
type writer struct {
	cache          *Cache
	root           *os.Root
	skipSubmodules bool
	// keep collects what a kept .git needs: the index entries of the top
	// repository.
	keep    bool
	index   []indexEntry
	top     *object.Commit
	fetches []Fetch
	// auth goes with the fetches of the remotes in its scope.
	auth Auth
}

// indexEntry is a path the top repository's index lists.
type indexEntry struct {
	name string
	hash plumbing.Hash
	mode filemode.FileMode
}

// write writes one job and then the submodules its tree has.
func (w *writer) write(ctx context.Context, j job, depth int) error {
	if depth > MaxSubmoduleDepth {
		return newError(j.remote, failure.KindInvalid, "submodules nest deeper than %d levels", MaxSubmoduleDepth)
	}
	r, err := w.cache.open(ctx, j.remote)
	if err != nil {
		return err
	}
	links, next, err := w.writeLocked(ctx, r, j, depth)
	r.close()
	if err != nil {
		return err
	}
	if next != nil {
		return w.write(ctx, *next, depth+1)
	}
	for _, l := range links {
		if err := w.write(ctx, job{remote: l.remote, commit: l.commit, out: l.out}, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// submodule is a gitlink with the URL of its repository.
type submodule struct {
	gitlink
	remote string
}

// writeLocked is the part of write that holds the repository: fetch,
// write the tree, find the submodules' URLs. When the tree path leads into
// a submodule, it returns the job that continues there instead.
func (w *writer) writeLocked(ctx context.Context, r *repo, j job, depth int) ([]submodule, *job, error) {
	fetches, err := r.ensure(ctx, j.ref, j.commit, w.auth)
	w.fetches = append(w.fetches, fetches...)
	if err != nil {
		return nil, nil, err
	}
	commit, err := r.peel(j.commit)
	if err != nil {
		return nil, nil, err
	}
	if depth == 0 {
		w.top = commit
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, nil, r.objectError(err)
	}
	tree, link, rest, err := r.descend(tree, j.treePath, commit.Hash)
	if err != nil {
		return nil, nil, err
	}
	if link != nil {
		if w.skipSubmodules {
			// A skipped submodule is an empty directory: nothing to
			// write, and nothing inside.
			if rest == "" {
				return nil, nil, nil
			}
			return nil, nil, newError(r.remote, failure.KindNotFound, "failed to open subdir %s: %s is in submodule %s, which is skipped", j.treePath, rest, link.repoPath)
		}
		u, err := r.submoduleURL(commit, link.repoPath)
		if err != nil {
			return nil, nil, err
		}
		return nil, &job{remote: u, commit: link.commit, treePath: rest, out: j.out}, nil
	}
	var links []gitlink
	if err := w.writeTree(ctx, r, tree, j.out, j.treePath, depth == 0 && w.keep, &links); err != nil {
		return nil, nil, err
	}
	if w.skipSubmodules {
		return nil, nil, nil
	}
	subs := make([]submodule, 0, len(links))
	for _, l := range links {
		u, err := r.submoduleURL(commit, l.repoPath)
		if err != nil {
			return nil, nil, err
		}
		subs = append(subs, submodule{gitlink: l, remote: u})
	}
	return subs, nil, nil
}

// peel returns the commit h names: h itself, or the commit an annotated
// tag (or a chain of them) points at.
func (r *repo) peel(h plumbing.Hash) (*object.Commit, error) {
	for range 16 {
		obj, err := r.git.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, r.objectError(err)
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, newError(r.remote, failure.KindInvalid, "expected commit or tag object, got %s", obj.Type())
		}
	}
	return nil, newError(r.remote, failure.KindInvalid, "tag %s: too many nested tags", h)
}

// objectError classifies a failure to read an object of the repository.
func (r *repo) objectError(err error) error {
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return &Error{Remote: r.remote, Kind: failure.KindNotFound, Err: fmt.Errorf("git repository %s: %w", r.remote, err)}
	}
	return fmt.Errorf("git repository %s: %w", r.remote, err)
}

// descend returns the tree at p (slash-separated, relative) of tree. When p
// leads into a submodule it returns that gitlink and what remains of p.
func (r *repo) descend(tree *object.Tree, p string, commit plumbing.Hash) (*object.Tree, *gitlink, string, error) {
	if p == "" {
		return tree, nil, "", nil
	}
	parts := strings.Split(p, "/")
	prefix := ""
	for i, part := range parts {
		var entry *object.TreeEntry
		for k := range tree.Entries {
			if tree.Entries[k].Name == part {
				entry = &tree.Entries[k]
				break
			}
		}
		prefix = path.Join(prefix, part)
		if entry == nil {
			return nil, nil, "", newError(r.remote, failure.KindNotFound, "failed to open subdir %s: %s does not exist in commit %s", p, prefix, commit)
		}
		switch entry.Mode {
		case filemode.Dir:
			next, err := r.git.TreeObject(entry.Hash)
			if err != nil {
				return nil, nil, "", r.objectError(err)
			}
			tree = next
		case filemode.Submodule:
			return nil, &gitlink{repoPath: prefix, commit: entry.Hash}, strings.Join(parts[i+1:], "/"), nil
		default:
			return nil, nil, "", newError(r.remote, failure.KindInvalid, "failed to open subdir %s: %s is not a directory", p, prefix)
		}
	}
	return tree, nil, "", nil
}

// writeTree writes tree into out, depth first, and collects its gitlinks;
// repoPath is the tree's path in its repository. With index set it also
// collects the top repository's index entries.
func (w *writer) writeTree(ctx context.Context, r *repo, tree *object.Tree, out, repoPath string, index bool, links *[]gitlink) error {
	for _, e := range tree.Entries {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		if err := checkName(e.Name); err != nil {
			return newError(r.remote, failure.KindInvalid, "tree entry %q in %s: %v", path.Join(repoPath, e.Name), r.remote, err)
		}
		name, rp := path.Join(out, e.Name), path.Join(repoPath, e.Name)
		switch e.Mode {
		case filemode.Dir:
			if err := w.mkdir(name); err != nil {
				return err
			}
			sub, err := r.git.TreeObject(e.Hash)
			if err != nil {
				return r.objectError(err)
			}
			if err := w.writeTree(ctx, r, sub, name, rp, index, links); err != nil {
				return err
			}
			continue
		case filemode.Regular, filemode.Deprecated:
			if err := w.writeBlob(r, name, e.Hash, 0o644); err != nil {
				return err
			}
		case filemode.Executable:
			if err := w.writeBlob(r, name, e.Hash, 0o755); err != nil {
				return err
			}
		case filemode.Symlink:
			target, err := r.readBlob(e.Hash)
			if err != nil {
				return err
			}
			if err := w.root.Symlink(string(target), name); err != nil {
				return err
			}
		case filemode.Submodule:
			if err := w.mkdir(name); err != nil {
				return err
			}
			*links = append(*links, gitlink{repoPath: rp, out: name, commit: e.Hash})
		default:
			return newError(r.remote, failure.KindInvalid, "tree entry %q: unsupported mode %s", rp, e.Mode)
		}
		if index {
			w.index = append(w.index, indexEntry{name: rp, hash: e.Hash, mode: e.Mode})
		}
	}
	return nil
}

// checkName refuses the tree entry names git refuses to check out.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errors.New("not a file name")
	case strings.ContainsAny(name, "/\x00"):
		return errors.New("name has a slash or NUL")
	case strings.EqualFold(name, ".git"):
		return errors.New("a tree may not have a .git")
	}
	return nil
}

func (w *writer) mkdir(name string) error {
	if err := w.root.Mkdir(name, 0o755); err != nil {
		return err
	}
	return w.root.Chmod(name, 0o755) // past the umask
}

// writeBlob writes the blob h as the file name with mode perm.
func (w *writer) writeBlob(r *repo, name string, h plumbing.Hash, perm os.FileMode) error {
	blob, err := r.git.BlobObject(h)
	if err != nil {
		return r.objectError(err)
	}
	rd, err := blob.Reader()
	if err != nil {
		return r.objectError(err)
	}
	defer func() { _ = rd.Close() }()
	f, err := w.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rd)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return w.root.Chmod(name, perm) // past the umask
}

// maxSymlink bounds a symlink target (PATH_MAX).
const maxSymlink = 4096

// readBlob reads a small blob: a symlink target, .gitmodules.
func (r *repo) readBlob(h plumbing.Hash) ([]byte, error) {
	blob, err := r.git.BlobObject(h)
	if err != nil {
		return nil, r.objectError(err)
	}
	if blob.Size > maxSymlink*256 {
		return nil, newError(r.remote, failure.KindInvalid, "blob %s is too large (%d bytes)", h, blob.Size)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, r.objectError(err)
	}
	defer func() { _ = rd.Close() }()
	return io.ReadAll(rd)
}

// submoduleURL is the URL of the submodule at repoPath of commit, from the
// commit's .gitmodules, resolved against the repository's own URL when it
// is relative.
func (r *repo) submoduleURL(commit *object.Commit, repoPath string) (string, error) {
	noURL := newError(r.remote, failure.KindNotFound, "no url found for submodule path %q in .gitmodules", repoPath)
	tree, err := commit.Tree()
	if err != nil {
		return "", r.objectError(err)
	}
	entry, err := tree.FindEntry(".gitmodules")
	if err != nil {
		return "", noURL
	}
	data, err := r.readBlob(entry.Hash)
	if err != nil {
		return "", err
	}
	m := config.NewModules()
	if err := m.Unmarshal(data); err != nil {
		return "", newError(r.remote, failure.KindInvalid, "%s: .gitmodules of commit %s: %v", r.remote, commit.Hash, err)
	}
	for _, s := range m.Submodules {
		if path.Clean(s.Path) != repoPath || s.URL == "" {
			continue
		}
		u := s.URL
		if strings.HasPrefix(u, "./") || strings.HasPrefix(u, "../") {
			if u, err = resolveRelative(r.remote, u); err != nil {
				return "", newError(r.remote, failure.KindInvalid, "submodule %s: %v", repoPath, err)
			}
		}
		if err := CheckRemote(u); err != nil {
			return "", newError(r.remote, failure.KindInvalid, "submodule %s: %v", repoPath, err)
		}
		return u, nil
	}
	return "", noURL
}

// resolveRelative resolves a relative submodule URL against the URL of the
// repository that has the submodule, as git does: "../b.git" next to it,
// "./b" inside it.
func resolveRelative(base, rel string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = path.Join("/", strings.TrimSuffix(u.Path, "/"), rel)
	u.RawPath = ""
	return u.String(), nil
}

// setTimes sets the times of what is under dir to t, symlinks themselves
// rather than their targets. With gitDir false it does the work tree
// (everything but dir itself and dir/.git); with gitDir true, dir/.git and
// then dir itself.
func setTimes(dir string, t time.Time, gitDir bool) error {
	gitPath := filepath.Join(dir, ".git")
	if gitDir {
		if _, err := os.Lstat(gitPath); err == nil {
			if err := walkTimes(gitPath, t, ""); err != nil {
				return err
			}
		}
		return lchtimes(dir, t)
	}
	return walkTimes(dir, t, gitPath)
}

// walkTimes sets the times of root's descendants (and of root, unless it is
// the checkout's top), skipping skip.
func walkTimes(root string, t time.Time, skip string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		if p == root && skip != "" {
			return nil
		}
		return lchtimes(p, t)
	})
}
