package snapshotter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"golang.org/x/sys/unix"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// LocalSessions reads the local directories clients serve over their
// sessions (pkg/session).
type LocalSessions interface {
	// List returns the paths of directory dir of session id that f
	// selects, parents first.
	List(ctx context.Context, id, dir string, f dirsync.Filter) ([]dirsync.Entry, error)
	// ReadFiles reads the content of files into w, in order.
	ReadFiles(ctx context.Context, id, dir string, files []dirsync.Entry, w dirsync.FileWriter) error
}

var _ LocalSessions = (*dirsync.Client)(nil)

// LabelLocalShared is the label, on the snapshot of a local transfer,
// holding the sha256 of its events.LocalContent.SharedKey: the next transfer with that shared
// key starts from the newest such snapshot.
const LabelLocalShared = "dev.stevedore.local.shared"

// localProgressInterval is the least time between two progress events of
// one transfer, BuildKit's.
const localProgressInterval = 100 * time.Millisecond

// snapshotLocal makes the snapshot of a local source by transferring the
// client's directory over its session, BuildKit's incremental file sync:
// the newest snapshot of an earlier transfer with the same shared key on
// this node is the base, and a file whose size, mtime, mode and owner are
// the base's is hard-linked from it instead of sent (unless the differ is
// "none"). The base is never written: a changed file is a new file. The
// key is session-scoped: nothing is recorded in the cache index, no other
// build asks for it, so no lease is taken.
func (h *Handler) snapshotLocal(ctx context.Context, in events.SnapshotRequested) ([]events.Event, error) {
	lc := in.Content.Local
	if h.local == nil {
		return nil, failure.Invalid(errors.New("local snapshots are not configured on this node"))
	}
	if err := session.ValidateID(lc.Session); err != nil {
		return nil, failure.Invalid(fmt.Errorf("local snapshot: %w", err))
	}
	if lc.Name == "" {
		return nil, failure.Invalid(errors.New("local snapshot: no directory name"))
	}
	if lc.Differ != "metadata" && lc.Differ != "none" && lc.Differ != "" {
		return nil, failure.Invalid(fmt.Errorf("local snapshot: unknown differ %q", lc.Differ))
	}
	key := in.Content.Key(in.Keys)
	if key == "" {
		return nil, failure.Invalid(errors.New("snapshot.requested for content carries no key"))
	}
	ready := events.SnapshotReady{Source: in.Source, Keys: in.Keys, SnapshotKey: key, Node: h.node}
	h.busy.RLock()
	defer h.busy.RUnlock()
	if h.store.HasKey(ctx, key) {
		ready.Reused = 1
		return []events.Event{events.New(ready)}, nil
	}
	sum := sha256.Sum256([]byte(lc.SharedKey))
	shared := hex.EncodeToString(sum[:])
	t := &localTransfer{lc: lc, sessions: h.local, now: h.now, vertex: in.Source.Identifier}
	if base, ok := h.store.Newest(ctx, LabelLocalShared, shared); ok && lc.Differ != "none" {
		t.base = base.Dir
	}
	res, err := h.store.Build(ctx, key, t.fill, snapshot.WithLabels(map[string]string{LabelLocalShared: shared}))
	if err != nil {
		return nil, fmt.Errorf("local snapshot of %q from session %s: %w", lc.Name, lc.Session, err)
	}
	ready.Size, ready.Fetched, ready.Linked = res.Size, t.sent, t.linked
	return []events.Event{events.New(ready)}, nil
}

// localTransfer is one transfer of a directory into a new snapshot.
type localTransfer struct {
	lc       *events.LocalContent
	sessions LocalSessions
	now      func() time.Time
	vertex   string
	// base is the directory of the snapshot to reuse files from; empty
	// for none.
	base string
	// dir is the snapshot's directory being filled.
	dir string
	// cur is the file being written, curPath its entry's path.
	cur     *os.File
	curPath string
	// symlinks are the paths made symlinks: no entry may be below one,
	// so every path written to goes through directories of the snapshot.
	symlinks map[string]bool
	// sent counts the files transferred, bytes their bytes.
	sent int
	// linked counts the files hard-linked from the base.
	linked int
	bytes  int64
	// started is when the transfer started; reported when the last
	// progress event went out.
	started, reported time.Time
	ctx               context.Context
}

// fill lists the directory, links what the base has, transfers the rest,
// and then sets the metadata of directories (after their children).
func (t *localTransfer) fill(ctx context.Context, dir string) (err error) {
	t.dir, t.ctx, t.started, t.symlinks = dir, ctx, t.now(), map[string]bool{}
	defer func() {
		if t.cur != nil {
			_ = t.cur.Close()
		}
	}()
	entries, err := t.sessions.List(ctx, t.lc.Session, t.lc.Name, dirsync.Filter{
		IncludePatterns: t.lc.IncludePatterns, ExcludePatterns: t.lc.ExcludePatterns, FollowPaths: t.lc.FollowPaths,
	})
	if err != nil {
		return err
	}
	var baseRoot *os.Root
	if t.base != "" {
		if baseRoot, err = os.OpenRoot(t.base); err != nil {
			baseRoot = nil // gone: transfer everything
		} else {
			defer func() { _ = baseRoot.Close() }()
		}
	}
	var fetch, links, dirs []dirsync.Entry
	for _, e := range entries {
		p, err := t.path(e.Path)
		if err != nil {
			return err
		}
		// A parent the listing did not have (an include pattern's):
		// its mode is set if the listing has it later.
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil { //nolint:gosec // G301: a snapshot's directories are world-readable, as in an image

			return err
		}
		switch {
		case e.Mode.IsDir():
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			dirs = append(dirs, e)
		case e.Mode&fs.ModeSymlink != 0:
			if err := os.Symlink(filepath.FromSlash(e.Linkname), p); err != nil {
				return err
			}
			t.symlinks[e.Path] = true
			if err := setMeta(p, e, true); err != nil {
				return err
			}
		case e.IsHardlink():
			links = append(links, e)
		case e.Mode.IsRegular():
			switch {
			case baseRoot != nil && sameFile(baseRoot, e) && os.Link(filepath.Join(t.base, filepath.FromSlash(e.Path)), p) == nil:
				t.linked++
			case e.Size == 0:
				if err := t.create(e); err != nil {
					return err
				}
				if err := t.Done(e); err != nil {
					return err
				}
			default:
				fetch = append(fetch, e)
			}
		default:
			if err := mknod(p, e); err != nil {
				return err
			}
		}
	}
	if err := t.sessions.ReadFiles(ctx, t.lc.Session, t.lc.Name, fetch, t); err != nil {
		return err
	}
	for _, e := range links {
		p, _ := t.path(e.Path)
		target, err := t.path(e.Linkname)
		if err != nil {
			return err
		}
		if err := os.Link(target, p); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		p, _ := t.path(dirs[i].Path)
		if err := setMeta(p, dirs[i], false); err != nil {
			return err
		}
	}
	t.progress(true)
	return nil
}

// path is where entry path p goes in the snapshot; p must be clean and
// relative, and below no symlink of the snapshot.
func (t *localTransfer) path(p string) (string, error) {
	if p == "" || path.Clean("/" + p)[1:] != p {
		return "", failure.Invalid(fmt.Errorf("local snapshot: path %q from the session is not clean and relative", p))
	}
	for parent := path.Dir(p); parent != "."; parent = path.Dir(parent) {
		if t.symlinks[parent] {
			return "", failure.Invalid(fmt.Errorf("local snapshot: path %q from the session is below symlink %q", p, parent))
		}
	}
	return filepath.Join(t.dir, filepath.FromSlash(p)), nil
}

// create starts writing file e.
func (t *localTransfer) create(e dirsync.Entry) error {
	p, err := t.path(e.Path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600) //nolint:gosec // G304: p is a checked path in the snapshot (t.path)
	if err != nil {
		return err
	}
	t.cur, t.curPath = f, e.Path
	return nil
}

// WriteAt implements dirsync.FileWriter: the chunks of a file come in
// order.
func (t *localTransfer) WriteAt(e dirsync.Entry, data []byte, off int64) error {
	if t.cur == nil || t.curPath != e.Path {
		if off != 0 {
			return fmt.Errorf("local snapshot: %q starts at offset %d", e.Path, off)
		}
		if err := t.create(e); err != nil {
			return err
		}
	}
	if _, err := t.cur.Write(data); err != nil {
		return err
	}
	t.bytes += int64(len(data))
	t.progress(false)
	return nil
}

// Done implements dirsync.FileWriter: the file is whole.
func (t *localTransfer) Done(e dirsync.Entry) error {
	f := t.cur
	t.cur = nil
	if err := f.Close(); err != nil {
		return err
	}
	if err := setMeta(f.Name(), e, false); err != nil {
		return err
	}
	if e.Size > 0 {
		t.sent++
	}
	return nil
}

// progress reports the transfer, "transferring <name>:" with the bytes so
// far, at most every localProgressInterval; the last one completed.
func (t *localTransfer) progress(last bool) {
	now := t.now()
	if !last && now.Sub(t.reported) < localProgressInterval {
		return
	}
	t.reported = now
	started := t.started
	ev := events.Progress{Vertex: t.vertex, ID: "transferring " + t.lc.Name + ":", Action: "transferring", Current: t.bytes, Started: &started}
	if last {
		ev.Action, ev.Completed = "done", &now
	}
	bus.Emit(t.ctx, ev)
}

// sameFile reports whether the base holds e unchanged: a regular file of
// the same size, mtime, mode and owner. The base is read through an
// os.Root, so no symlink in it leads outside.
func sameFile(base *os.Root, e dirsync.Entry) bool {
	fi, err := base.Lstat(filepath.FromSlash(e.Path))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode() != e.Mode || fi.Size() != e.Size || fi.ModTime().UnixNano() != e.ModTime {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == e.UID && st.Gid == e.GID
}

// setMeta gives p e's owner (as root only), mode and mtime; link is set
// for a symlink, whose mode is not its own.
func setMeta(p string, e dirsync.Entry, link bool) error {
	if os.Geteuid() == 0 {
		if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
			return err
		}
	}
	if !link {
		if err := os.Chmod(p, e.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.ModTime), unix.NsecToTimespec(e.ModTime)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// mknod makes a named pipe or a device node; a socket is skipped.
func mknod(p string, e dirsync.Entry) error {
	var mode uint32
	switch {
	case e.Mode&fs.ModeNamedPipe != 0:
		mode = unix.S_IFIFO
	case e.Mode&fs.ModeCharDevice != 0:
		mode = unix.S_IFCHR
	case e.Mode&fs.ModeDevice != 0:
		mode = unix.S_IFBLK
	default:
		return nil
	}
	dev := unix.Mkdev(uint32(e.Devmajor), uint32(e.Devminor))                   //nolint:gosec // G115: device numbers fit
	if err := unix.Mknod(p, mode|uint32(e.Mode.Perm()), int(dev)); err != nil { //nolint:gosec // G115: as above
		return fmt.Errorf("local snapshot: %s: %w", e.Path, err)
	}
	return setMeta(p, e, false)
}
