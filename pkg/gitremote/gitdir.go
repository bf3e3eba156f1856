package gitremote

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// writeGitDir writes the .git of a kept checkout, as BuildKit's
// `git init; git fetch --depth=1 origin <ref>:<ref>; git checkout
// FETCH_HEAD; git remote set-url origin <remote>` leaves it: the commit's
// objects in one pack (and the tag object for an annotated tag), shallow
// at the commit, req.Ref pointing at what the remote's ref points at when
// that is the commit or a tag of it, HEAD detached at the commit, origin
// set to the remote, and an index of the files as written.
func (c *Cache) writeGitDir(ctx context.Context, req CheckoutRequest, commit *object.Commit, entries []indexEntry, root *os.Root) error {
	r, err := c.open(ctx, req.Remote)
	if err != nil {
		return err
	}
	defer r.close()
	dst, err := git.PlainInit(req.Dir, false)
	if err != nil {
		return fmt.Errorf("keep git dir: %w", err)
	}
	hashes := []plumbing.Hash{commit.Hash}
	target := commit.Hash
	if strings.HasPrefix(req.Ref, "refs/") {
		if tags := r.tagsOf(plumbing.ReferenceName(req.Ref), commit.Hash); len(tags) > 0 {
			target = tags[0]
			hashes = append(hashes, tags...)
		}
	}
	tree, err := commit.Tree()
	if err != nil {
		return r.objectError(err)
	}
	seen := map[plumbing.Hash]bool{}
	if err := r.treeObjects(ctx, tree, seen, &hashes); err != nil {
		return err
	}
	if err := copyObjects(r, dst, hashes); err != nil {
		return fmt.Errorf("keep git dir: %w", err)
	}
	if commit.NumParents() > 0 {
		if err := dst.Storer.SetShallow([]plumbing.Hash{commit.Hash}); err != nil {
			return fmt.Errorf("keep git dir: %w", err)
		}
	}
	if strings.HasPrefix(req.Ref, "refs/") {
		if err := dst.Storer.SetReference(plumbing.NewHashReference(plumbing.ReferenceName(req.Ref), target)); err != nil {
			return fmt.Errorf("keep git dir: %w", err)
		}
	}
	if err := dst.Storer.SetReference(plumbing.NewHashReference(plumbing.HEAD, commit.Hash)); err != nil {
		return fmt.Errorf("keep git dir: %w", err)
	}
	cfg, err := dst.Config()
	if err != nil {
		return fmt.Errorf("keep git dir: %w", err)
	}
	cfg.Remotes["origin"] = &config.RemoteConfig{Name: "origin", URLs: []string{req.Remote},
		Fetch: []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*"}}
	if err := dst.SetConfig(cfg); err != nil {
		return fmt.Errorf("keep git dir: %w", err)
	}
	idx := &index.Index{Version: 2}
	for _, e := range entries {
		ie := &index.Entry{Name: e.name, Hash: e.hash, Mode: e.mode}
		if e.mode != filemode.Submodule {
			fi, err := root.Lstat(e.name)
			if err != nil {
				return fmt.Errorf("keep git dir: %w", err)
			}
			ie.ModifiedAt, ie.Size = fi.ModTime(), uint32(fi.Size()) //nolint:gosec // G115: the index keeps the low 32 bits, as git does
			fillStat(ie, fi)
		}
		idx.Entries = append(idx.Entries, ie)
	}
	if err := dst.Storer.SetIndex(idx); err != nil {
		return fmt.Errorf("keep git dir: %w", err)
	}
	return nil
}

// tagsOf returns the annotated tag objects from ref down to commit (the
// tag, then any tag it points at), or nil when ref does not name a tag of
// commit in the cache.
func (r *repo) tagsOf(ref plumbing.ReferenceName, commit plumbing.Hash) []plumbing.Hash {
	got, err := r.git.Reference(ref, true)
	if err != nil {
		return nil
	}
	var tags []plumbing.Hash
	h := got.Hash()
	for range 16 {
		tag, err := r.git.TagObject(h)
		if err != nil {
			return nil
		}
		tags = append(tags, h)
		if tag.TargetType == plumbing.CommitObject {
			if tag.Target == commit {
				return tags
			}
			return nil
		}
		h = tag.Target
	}
	return nil
}

// treeObjects appends the trees and blobs under tree (not what gitlinks
// name, which other repositories hold).
func (r *repo) treeObjects(ctx context.Context, tree *object.Tree, seen map[plumbing.Hash]bool, out *[]plumbing.Hash) error {
	if seen[tree.Hash] {
		return nil
	}
	seen[tree.Hash] = true
	*out = append(*out, tree.Hash)
	for _, e := range tree.Entries {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		switch {
		case e.Mode == filemode.Dir:
			sub, err := r.git.TreeObject(e.Hash)
			if err != nil {
				return r.objectError(err)
			}
			if err := r.treeObjects(ctx, sub, seen, out); err != nil {
				return err
			}
		case e.Mode == filemode.Submodule:
		case !seen[e.Hash]:
			seen[e.Hash] = true
			*out = append(*out, e.Hash)
		}
	}
	return nil
}

// copyObjects writes hashes of r into dst as one pack.
func copyObjects(r *repo, dst *git.Repository, hashes []plumbing.Hash) error {
	pw, ok := dst.Storer.(storer.PackfileWriter)
	if !ok {
		return fmt.Errorf("storage %T cannot take a pack", dst.Storer)
	}
	w, err := pw.PackfileWriter()
	if err != nil {
		return err
	}
	_, err = packfile.NewEncoder(w, r.git.Storer, false).Encode(hashes, 0)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}
