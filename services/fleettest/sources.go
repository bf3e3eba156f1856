package fleettest

// Helpers for the source conformance suite (sources_test.go), usable by any
// test that needs them:
//
//   - File, SnapshotTree and LayoutTree describe file trees: what a
//     committed snapshot holds, read through a view of it, and what the
//     layers of an OCI layout unpack to, worked out with archive/tar alone
//     (an oracle independent of pkg/snapshot).
//   - ReadStore lists what a node's store holds besides its blobs:
//     committed and uncommitted snapshots and unfinished ingests.
//   - A Stall holds a transfer of a source's content in the middle, so a
//     test can act while a snapshotter is halfway through it; HTTPStalls
//     (an http.Handler wrapper, and ProxyRegistry in front of the stack's
//     registry), TCPProxy (for git daemon) and SessionRelay (for a client
//     session) make them.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/nats-io/nats.go"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
	"github.com/stevedore-dev/stevedore/pkg/snapshot"
)

// File is one entry of a file tree: a regular file, a directory or a
// symlink.
type File struct {
	// Content is a regular file's bytes.
	Content string
	// Mode is the permission bits (with setuid, setgid and sticky) of a
	// file or directory; a symlink's is not compared.
	Mode fs.FileMode
	// Dir marks a directory.
	Dir bool
	// Link is a symlink's target; empty for anything else.
	Link string
	// ModTime, when not zero, is the mtime a regular file must have.
	ModTime time.Time
}

func (f File) String() string {
	switch {
	case f.Dir:
		return fmt.Sprintf("dir %o", f.Mode)
	case f.Link != "":
		return "symlink -> " + f.Link
	}
	s := fmt.Sprintf("file %o %q", f.Mode, f.Content)
	if len(f.Content) > 64 {
		s = fmt.Sprintf("file %o, %d bytes %s", f.Mode, len(f.Content), digest.FromString(f.Content))
	}
	if !f.ModTime.IsZero() {
		s += " mtime " + f.ModTime.UTC().Format(time.RFC3339)
	}
	return s
}

// modeBits are the bits of a mode File compares.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// DiffTrees lists how got differs from want, one line per path, sorted;
// nil when they agree. A want entry's zero ModTime is not compared.
func DiffTrees(want, got map[string]File) []string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing, want %s", p, w))
		case w.Dir != g.Dir || (w.Link == "") != (g.Link == ""):
			out = append(out, fmt.Sprintf("%s: %s, want %s", p, g, w))
		case w.Link != "":
			if w.Link != g.Link {
				out = append(out, fmt.Sprintf("%s: %s, want %s", p, g, w))
			}
		case w.Mode != g.Mode || w.Content != g.Content || (!w.ModTime.IsZero() && !w.ModTime.Equal(g.ModTime)):
			out = append(out, fmt.Sprintf("%s: %s, want %s", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("%s: unexpected %s", p, g))
		}
	}
	slices.Sort(out)
	return out
}

// ReadTree describes every entry under dir (not dir itself), by
// slash-separated path relative to dir.
func ReadTree(t testing.TB, dir string) map[string]File {
	t.Helper()
	out := map[string]File{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var f File
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if f.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.IsDir():
			f = File{Dir: true, Mode: fi.Mode() & modeBits}
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p) //nolint:gosec // G304: a test reads the tree it was given
			if err != nil {
				return err
			}
			f = File{Content: string(data), Mode: fi.Mode() & modeBits, ModTime: fi.ModTime()}
		default:
			return fmt.Errorf("%s: unexpected file type %s", rel, fi.Mode().Type())
		}
		out[filepath.ToSlash(rel)] = f
		return nil
	})
	if err != nil {
		t.Fatalf("read tree %s: %v", dir, err)
	}
	return out
}

// views numbers the views SnapshotTree makes.
var views atomic.Int64

// SnapshotTree reads the committed snapshot key of store through a
// read-only view. A view that is one bind mount (a snapshot without
// parent, or any snapshot of the native snapshotter) is read where it
// is; any other (an overlayfs view of a layer chain) is mounted on a
// temporary directory for the read, which needs root. The view is
// removed before it returns.
func SnapshotTree(t testing.TB, store *snapshot.Store, key string) map[string]File {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	sn := store.Snapshotter()
	view := fmt.Sprintf("fleettest-view-%d", views.Add(1))
	mounts, err := sn.View(ctx, view, key)
	if err != nil {
		t.Fatalf("view of snapshot %s: %v", key, err)
	}
	defer func() { _ = sn.Remove(ctx, view) }()
	if len(mounts) == 1 && (mounts[0].Type == "bind" || mounts[0].Type == "rbind") {
		return ReadTree(t, mounts[0].Source)
	}
	var tree map[string]File
	if err := mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		tree = ReadTree(t, root)
		return nil
	}); err != nil {
		t.Fatalf("mount the view of snapshot %s (%+v): %v", key, mounts, err)
	}
	return tree
}

// StoreState is what a node's store holds besides its blobs.
type StoreState struct {
	// Committed are the names of the committed snapshots.
	Committed []string
	// Active are the names of the snapshots that are not committed (one
	// being made: pkg/snapshot names those "extract-…"; or a view), and of
	// any committed one that still has the name of one being made.
	Active []string
	// Ingests are the refs of unfinished writes to the content store.
	Ingests []string
}

// Empty reports a store with no snapshot of any kind and no ingest.
func (s StoreState) Empty() bool {
	return len(s.Committed)+len(s.Active)+len(s.Ingests) == 0
}

// activePrefix starts the name of every snapshot pkg/snapshot is making
// (its own unexported activePrefix).
const activePrefix = "extract-"

// ReadStore lists the snapshots and ingests of store.
func ReadStore(t testing.TB, store *snapshot.Store) StoreState {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	var st StoreState
	err := store.Snapshotter().Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted && !strings.HasPrefix(info.Name, activePrefix) {
			st.Committed = append(st.Committed, info.Name)
		} else {
			st.Active = append(st.Active, info.Name)
		}
		return nil
	})
	if err != nil && !errdefs.IsNotFound(err) { // a store that never had a snapshot has no bucket yet
		t.Fatalf("walk snapshots: %v", err)
	}
	// An ingest being committed while it is listed (its data moved, its
	// directory not yet removed) fails the listing: list again.
	statuses, err := store.Content().ListStatuses(ctx)
	for attempt := 0; errdefs.IsNotFound(err) && attempt < 100; attempt++ {
		time.Sleep(10 * time.Millisecond)
		statuses, err = store.Content().ListStatuses(ctx)
	}
	if err != nil {
		t.Fatalf("list ingests: %v", err)
	}
	for _, s := range statuses {
		st.Ingests = append(st.Ingests, s.Ref)
	}
	slices.Sort(st.Committed)
	slices.Sort(st.Active)
	slices.Sort(st.Ingests)
	return st
}

// LayoutTree is the root filesystem the layers (compressed digests, bottom
// first) of the OCI layout at dir unpack to, read with archive/tar and
// compress/gzip: regular files (with their tar mtimes), directories,
// symlinks, hard links (as copies), whiteouts and opaque directories.
func LayoutTree(t testing.TB, dir string, layers []string) map[string]File {
	t.Helper()
	tree := map[string]File{}
	for _, l := range layers {
		d, err := digest.Parse(l)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = bytes.NewReader(data)
		if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			if r, err = gzip.NewReader(r); err != nil {
				t.Fatalf("layer %s: %v", l, err)
			}
		}
		if err := applyTar(tree, tar.NewReader(r)); err != nil {
			t.Fatalf("layer %s: %v", l, err)
		}
	}
	return tree
}

func applyTar(tree map[string]File, tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if base == ".wh..wh..opq" {
			removeUnder(tree, dir)
			continue
		}
		if victim, ok := strings.CutPrefix(base, ".wh."); ok {
			p := path.Join(dir, victim)
			delete(tree, p)
			removeUnder(tree, p)
			continue
		}
		mode := h.FileInfo().Mode() & modeBits
		switch h.Typeflag {
		case tar.TypeDir:
			tree[name] = File{Dir: true, Mode: mode}
		case tar.TypeSymlink:
			removeUnder(tree, name)
			tree[name] = File{Link: h.Linkname}
		case tar.TypeLink:
			target, ok := tree[strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")]
			if !ok {
				return fmt.Errorf("hard link %s to missing %s", name, h.Linkname)
			}
			tree[name] = target
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			removeUnder(tree, name)
			tree[name] = File{Content: string(data), Mode: mode, ModTime: h.ModTime}
		default:
			return fmt.Errorf("%s: tar entry type %q is not supported here", name, h.Typeflag)
		}
	}
}

// removeUnder deletes every entry below dir (not dir itself).
func removeUnder(tree map[string]File, dir string) {
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	for p := range tree {
		if strings.HasPrefix(p, prefix) && p != dir {
			delete(tree, p)
		}
	}
}

// A Stall holds transfers of a source's content in the middle. Armed, the
// transfers it matches get part of their content and then wait; Arrived
// is closed when the first one waits. Cut drops the waiting ones and
// every matching one after it at once (the content's server is gone);
// Restore lets everything through, the waiting ones too. Tests restore it
// at their end.
type Stall struct {
	arrived  chan struct{}
	cut      chan struct{}
	restored chan struct{}
	once     sync.Once
	cutOnce  sync.Once
	restOnce sync.Once
}

func newStall(t testing.TB) *Stall {
	st := &Stall{arrived: make(chan struct{}), cut: make(chan struct{}), restored: make(chan struct{})}
	t.Cleanup(st.Restore)
	return st
}

// Arrived is closed when the first matching transfer waits.
func (s *Stall) Arrived() <-chan struct{} { return s.arrived }

// Cut drops the waiting transfers and makes every later matching one fail
// at once, until Restore.
func (s *Stall) Cut() { s.cutOnce.Do(func() { close(s.cut) }) }

// Restore lets every transfer through, the waiting ones included.
func (s *Stall) Restore() { s.restOnce.Do(func() { close(s.restored) }) }

func (s *Stall) isRestored() bool {
	select {
	case <-s.restored:
		return true
	default:
		return false
	}
}

func (s *Stall) isCut() bool {
	select {
	case <-s.cut:
		return !s.isRestored()
	default:
		return false
	}
}

// hold is a matching transfer's wait after its first part: true to go on,
// false to fail. It fails at once when the stall is cut.
func (s *Stall) hold(done <-chan struct{}) bool {
	if s.isRestored() {
		return true
	}
	if s.isCut() {
		return false
	}
	s.once.Do(func() { close(s.arrived) })
	select {
	case <-s.restored:
		return true
	case <-s.cut:
		return s.isRestored()
	case <-done:
		return false
	}
}

// HTTPStalls wraps http.Handlers so that armed stalls hold their
// responses.
type HTTPStalls struct {
	mu   sync.Mutex
	arms []httpArm
}

type httpArm struct {
	match func(*http.Request) bool
	after int64
	stall *Stall
}

// Arm makes the requests match accepts get their status, headers and the
// first after bytes of their body, then wait (see Stall). A cut request
// or one that arrives cut is aborted (the connection drops).
func (h *HTTPStalls) Arm(t testing.TB, match func(*http.Request) bool, after int64) *Stall {
	st := newStall(t)
	h.mu.Lock()
	h.arms = append(h.arms, httpArm{match: match, after: after, stall: st})
	h.mu.Unlock()
	return st
}

func (h *HTTPStalls) find(r *http.Request) (httpArm, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.arms {
		if !a.stall.isRestored() && a.match(r) {
			return a, true
		}
	}
	return httpArm{}, false
}

// Wrap returns next with the stalls applied.
func (h *HTTPStalls) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := h.find(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if a.stall.isCut() {
			panic(http.ErrAbortHandler)
		}
		next.ServeHTTP(&stallWriter{ResponseWriter: w, left: a.after, stall: a.stall, done: r.Context().Done()}, r)
	})
}

// stallWriter passes left bytes of the body, then holds.
type stallWriter struct {
	http.ResponseWriter
	left  int64
	held  bool
	stall *Stall
	done  <-chan struct{}
}

func (w *stallWriter) Write(p []byte) (int, error) {
	if w.held || int64(len(p)) <= w.left {
		w.left -= int64(len(p))
		return w.ResponseWriter.Write(p)
	}
	n, err := w.ResponseWriter.Write(p[:w.left])
	if err != nil {
		return n, err
	}
	w.Flush()
	w.held = true
	if !w.stall.hold(w.done) {
		// The server goes away mid-body: the client sees the connection
		// drop.
		panic(http.ErrAbortHandler)
	}
	m, err := w.ResponseWriter.Write(p[n:])
	return n + m, err
}

// Flush implements http.Flusher.
func (w *stallWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ProxyRegistry serves the stack's registry through a reverse proxy on
// 127.0.0.1 whose responses stalls can hold, and returns its host (for
// image references) and stalls.
func (s *Stack) ProxyRegistry(t testing.TB) (host string, stalls *HTTPStalls) {
	t.Helper()
	target, err := url.Parse(s.Registry.URL())
	if err != nil {
		t.Fatal(err)
	}
	stalls = &HTTPStalls{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	// A client that goes away mid-body, or a stall that cuts one off, is
	// what the tests do on purpose: no log lines about it.
	quiet := log.New(io.Discard, "", 0)
	proxy.ErrorLog = quiet
	srv := httptest.NewUnstartedServer(stalls.Wrap(proxy))
	srv.Config.ErrorLog = quiet
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), stalls
}

// TCPProxy forwards connections on 127.0.0.1 to a target address; armed,
// it holds what the target sends on new connections (see Arm).
type TCPProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	arms  []tcpArm
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

type tcpArm struct {
	after int64
	stall *Stall
}

// NewTCPProxy starts a proxy to target until the end of the test.
func NewTCPProxy(t testing.TB, target string) *TCPProxy {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &TCPProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's "127.0.0.1:PORT".
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Arm makes every connection accepted from now on pass the first after
// bytes the target sends and then wait (see Stall); a cut connection, or
// one accepted cut, is closed.
func (p *TCPProxy) Arm(t testing.TB, after int64) *Stall {
	st := newStall(t)
	p.mu.Lock()
	p.arms = append(p.arms, tcpArm{after: after, stall: st})
	p.mu.Unlock()
	return st
}

func (p *TCPProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		var arm *tcpArm
		p.mu.Lock()
		for i := range p.arms {
			if !p.arms[i].stall.isRestored() {
				arm = &p.arms[i]
				break
			}
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c, arm)
	}
}

func (p *TCPProxy) serve(client net.Conn, arm *tcpArm) {
	defer p.wg.Done()
	p.track(client, true)
	defer p.track(client, false)
	defer func() { _ = client.Close() }()
	if arm != nil && arm.stall.isCut() {
		return
	}
	var d net.Dialer
	upstream, err := d.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.track(upstream, true)
	defer p.track(upstream, false)
	defer func() { _ = upstream.Close() }()
	closed := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(closed); _ = client.Close(); _ = upstream.Close() }) }
	go func() {
		_, _ = io.Copy(upstream, client)
		stop()
	}()
	if arm != nil {
		if _, err := io.CopyN(client, upstream, arm.after); err != nil || !arm.stall.hold(closed) {
			stop()
			return
		}
	}
	_, _ = io.Copy(client, upstream)
	stop()
}

// SessionRelay serves a client session under another id: every request to
// session front is sent on to session back, and its reply back. Armed, it
// holds reads of a blob in the middle (see Arm).
type SessionRelay struct {
	nc    *nats.Conn
	front session.Key
	back  string
	done  chan struct{}
	wg    sync.WaitGroup

	mu   sync.Mutex
	arms map[digest.Digest]*Stall
	// files holds the file reads of a local directory, after the first
	// (ArmFiles); passed counts those answered.
	files  *Stall
	passed int
}

// RelaySession serves session front.ID on nc from session back until the
// end of the test, signing the answers with front (a keyed session), whose
// key the process holds meanwhile (session.Hold), so requests naming it
// are signed.
func RelaySession(t testing.TB, nc *nats.Conn, front session.Key, back string) *SessionRelay {
	t.Helper()
	r := &SessionRelay{nc: nc, front: front, back: back, done: make(chan struct{}), arms: map[digest.Digest]*Stall{}}
	t.Cleanup(session.Hold(front))
	sub, err := nc.Subscribe(session.Filter(front.ID), func(m *nats.Msg) {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relay(m)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		close(r.done)
		r.wg.Wait()
	})
	return r
}

// Arm makes reads of blob d stall halfway: the read at offset 0 is
// answered with the first half of what the session sends (a session may
// send less than asked, as one with a lower payload limit does), the
// reads of the rest wait (see Stall). Cut answers those with an internal
// error, a session whose store failed to read.
func (r *SessionRelay) Arm(t testing.TB, d digest.Digest) *Stall {
	st := newStall(t)
	r.mu.Lock()
	r.arms[d] = st
	r.mu.Unlock()
	return st
}

// ArmFiles makes the file reads of a local directory stall after the
// first: the first OpFiles request is answered, the next ones wait (see
// Stall). Cut answers those with an internal error, a session whose
// directory failed to read.
func (r *SessionRelay) ArmFiles(t testing.TB) *Stall {
	st := newStall(t)
	r.mu.Lock()
	r.files, r.passed = st, 0
	r.mu.Unlock()
	return st
}

func (r *SessionRelay) relay(m *nats.Msg) {
	op := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if op == session.OpKey {
		r.respond(m, r.front.KeyAnswer())
		return
	}
	// Requests come sealed to the front session; the back one is not
	// keyed, so they go on to it opened.
	body, err := r.front.OpenRequest(m)
	if err != nil {
		r.respond(m, &nats.Msg{Header: nats.Header{session.HeaderError: []string{session.CodeInvalid}}, Data: []byte(err.Error())})
		return
	}
	header := nats.Header{}
	for k, v := range m.Header {
		if k != session.HeaderSealedBy {
			header[k] = v
		}
	}
	if op == dirsync.OpFiles {
		r.mu.Lock()
		st := r.files
		if st != nil && !st.isRestored() {
			r.passed++
		} else {
			st = nil
		}
		hold := st != nil && r.passed > 1
		r.mu.Unlock()
		if hold && !st.hold(r.done) {
			r.respond(m, &nats.Msg{Header: nats.Header{session.HeaderError: []string{session.CodeInternal}},
				Data: []byte("the relay's directory went away")})
			return
		}
	}
	var req store.BlobRequest
	_ = json.Unmarshal(body, &req)
	var st *Stall
	if op == store.OpBlob {
		r.mu.Lock()
		st = r.arms[req.Digest]
		r.mu.Unlock()
		if st != nil && st.isRestored() {
			st = nil
		}
	}
	if st != nil && req.Offset > 0 && !st.hold(r.done) {
		r.respond(m, &nats.Msg{Header: nats.Header{session.HeaderError: []string{session.CodeInternal}},
			Data: []byte(fmt.Sprintf("blob %s in store %q: the relay's store went away", req.Digest, req.Store))})
		return
	}
	reply, err := r.nc.RequestMsg(&nats.Msg{Subject: session.Subject(r.back, op), Header: header, Data: body}, 10*time.Second)
	if err != nil {
		return // no reply: the reader times out, as with a gone session
	}
	out := &nats.Msg{Header: reply.Header, Data: reply.Data}
	if st != nil && req.Offset == 0 && reply.Header.Get(session.HeaderError) == "" && len(reply.Data) > 1 {
		out.Data = reply.Data[:len(reply.Data)/2]
	}
	r.respond(m, out)
}

// respond answers m with out, signed as the front session.
func (r *SessionRelay) respond(m, out *nats.Msg) {
	out.Subject = m.Reply
	if err := r.front.SignAnswer(m, out); err != nil {
		return // unsigned, the reader would drop it: it times out
	}
	_ = m.RespondMsg(out)
}
