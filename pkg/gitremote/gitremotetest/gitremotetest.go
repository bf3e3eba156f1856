// Package gitremotetest serves git repositories to tests with the host's
// git: git daemon on 127.0.0.1 (git://) and git http-backend behind
// net/http/cgi (http://), each started by the test and stopped by it
// (the daemon by its pid). It also makes repositories with reproducible
// commits: fixed names, e-mails and dates, so commit ids are the same on
// every run.
//
// git is needed only here, by tests: the code under test uses go-git. A
// test that finds no git binary is skipped with the reason, and fails
// when the CI environment variable is set (pkg/testenv), so CI never
// skips silently.
package gitremotetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/cgi" //nolint:gosec // G504: the Httpoxy bug is fixed since Go 1.6.3; tests only
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

// Epoch is the author and committer time of a Work's first commit; each
// later commit is an hour after the one before.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Binary returns the path of git, or skips the test (fails it under CI:
// testenv.Tool).
func Binary(t testing.TB) string {
	t.Helper()
	return testenv.Tool(t, "git", "it serves the test repositories")
}

// env is the environment every git command runs with: no user or system
// configuration, a fixed identity.
func env(home string) []string {
	return append(os.Environ(),
		"HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_AUTHOR_NAME=Stevedore Test", "GIT_AUTHOR_EMAIL=test@stevedore.invalid",
		"GIT_COMMITTER_NAME=Stevedore Test", "GIT_COMMITTER_EMAIL=test@stevedore.invalid",
		"GIT_TERMINAL_PROMPT=0",
	)
}

// Run runs git in dir with extra environment entries and returns its
// output, failing the test if git fails.
func Run(t testing.TB, dir string, extraEnv []string, args ...string) string {
	t.Helper()
	return RunInput(t, dir, extraEnv, "", args...)
}

// RunInput is Run with stdin.
func RunInput(t testing.TB, dir string, extraEnv []string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), Binary(t), args...) //nolint:gosec // G204: tests choose the arguments
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(env(t.TempDir()), extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// Root is a directory of bare repositories ("<name>.git") that servers
// export.
type Root struct {
	// Dir is the directory.
	Dir string
}

// NewRoot returns an empty Root under t.TempDir().
func NewRoot(t testing.TB) *Root {
	t.Helper()
	return &Root{Dir: t.TempDir()}
}

// Path is the directory of the bare repository name ("repo" for
// "repo.git").
func (r *Root) Path(name string) string { return filepath.Join(r.Dir, name+".git") }

// CloneBundle makes the bare repository name a clone of a git bundle.
func (r *Root) CloneBundle(t testing.TB, name, bundle string) {
	t.Helper()
	abs, err := filepath.Abs(bundle)
	if err != nil {
		t.Fatal(err)
	}
	Run(t, r.Dir, nil, "clone", "--quiet", "--bare", abs, r.Path(name))
}

// Config sets a configuration value of the bare repository name, for
// example uploadpack.allowAnySHA1InWant.
func (r *Root) Config(t testing.TB, name, key, value string) {
	t.Helper()
	Run(t, r.Path(name), nil, "config", key, value)
}

// Work is a work tree for making commits.
type Work struct {
	t       testing.TB
	commits int
	// Dir is the work tree.
	Dir string
}

// NewWork returns a new repository whose first branch is main.
func NewWork(t testing.TB) *Work {
	t.Helper()
	w := &Work{t: t, Dir: t.TempDir()}
	w.Git("init", "--quiet", "--initial-branch=main")
	return w
}

// Git runs git in the work tree at the time of the next commit.
func (w *Work) Git(args ...string) string {
	w.t.Helper()
	at := w.Time(w.commits).Format(time.RFC3339)
	return Run(w.t, w.Dir, []string{"GIT_AUTHOR_DATE=" + at, "GIT_COMMITTER_DATE=" + at}, args...)
}

// Time is the time of the commit numbered n (from 0).
func (w *Work) Time(n int) time.Time { return Epoch.Add(time.Duration(n) * time.Hour) }

// Write writes a file (creating its directories) with mode perm.
func (w *Work) Write(name, content string, perm os.FileMode) {
	w.t.Helper()
	p := filepath.Join(w.Dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		w.t.Fatal(err)
	}
}

// Symlink makes name a symlink to target.
func (w *Work) Symlink(target, name string) {
	w.t.Helper()
	p := filepath.Join(w.Dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		w.t.Fatal(err)
	}
}

// Submodule records, at path, a submodule at commit fetched from url, by
// writing .gitmodules and the gitlink (no clone is needed).
func (w *Work) Submodule(path, url, commit string) {
	w.t.Helper()
	// An empty directory is an unpopulated submodule: git add leaves the
	// gitlink alone.
	if err := os.MkdirAll(filepath.Join(w.Dir, path), 0o750); err != nil {
		w.t.Fatal(err)
	}
	w.Git("config", "-f", ".gitmodules", "submodule."+path+".path", path)
	w.Git("config", "-f", ".gitmodules", "submodule."+path+".url", url)
	w.Git("update-index", "--add", "--cacheinfo", "160000,"+commit+","+path)
	w.Git("add", ".gitmodules")
}

// Commit commits everything in the work tree and returns the commit id.
func (w *Work) Commit(msg string) string {
	w.t.Helper()
	w.Git("add", "-A")
	w.Git("commit", "--quiet", "--allow-empty", "-m", msg)
	w.commits++
	return w.Git("rev-parse", "HEAD")
}

// Tag makes a lightweight tag of HEAD.
func (w *Work) Tag(name string) {
	w.t.Helper()
	w.Git("tag", name)
}

// AnnotatedTag makes an annotated tag of HEAD and returns the tag object's
// id.
func (w *Work) AnnotatedTag(name, msg string) string {
	w.t.Helper()
	w.Git("tag", "-a", name, "-m", msg)
	return w.Git("rev-parse", name)
}

// Push publishes every branch and tag of the work tree as the bare
// repository name of root (made when missing), replacing what it had.
func (w *Work) Push(root *Root, name string) {
	w.t.Helper()
	bare := root.Path(name)
	if _, err := os.Stat(bare); err != nil {
		Run(w.t, root.Dir, nil, "init", "--quiet", "--bare", "--initial-branch=main", bare)
	}
	w.Git("push", "--quiet", "--force", "--mirror", bare)
}

// Daemon is a running git daemon.
type Daemon struct {
	// URL is the base URL; a repository is URL + "<name>.git".
	URL string
	pid int
}

// ServeDaemon starts git daemon on 127.0.0.1 exporting root, until the end
// of the test, when it is stopped by its pid.
func ServeDaemon(t testing.TB, root *Root) *Daemon {
	t.Helper()
	bin := Binary(t)
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		// Stopped by its pid at the end of the test, not by a context.
		cmd := exec.CommandContext(context.WithoutCancel(t.Context()), bin, "daemon", "--reuseaddr", "--export-all", "--informative-errors", //nolint:gosec // G204: tests choose the arguments
			"--base-path="+root.Dir, "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port), root.Dir)
		cmd.Env = env(t.TempDir())
		var stderr lockedBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("git daemon: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		d := &Daemon{URL: fmt.Sprintf("git://127.0.0.1:%d/", port), pid: cmd.Process.Pid}
		up, gone := waitListening(fmt.Sprintf("127.0.0.1:%d", port), exited)
		if up {
			t.Cleanup(func() {
				_ = syscall.Kill(d.pid, syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					_ = syscall.Kill(d.pid, syscall.SIGKILL)
					<-exited
				}
			})
			return d
		}
		if !gone {
			_ = syscall.Kill(d.pid, syscall.SIGKILL)
			<-exited
		}
		if attempt == 4 {
			t.Fatalf("git daemon did not start: %s", stderr.String())
		}
	}
}

// waitListening waits up to 10s for addr to accept connections. gone
// reports that the process exited (and its exit was received).
func waitListening(addr string, exited <-chan struct{}) (up, gone bool) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false, true
		default:
		}
		if c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(context.Background(), "tcp", addr); err == nil {
			_ = c.Close()
			return true, false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false, false
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// HTTP is a running git smart-HTTP server.
type HTTP struct {
	// URL is the base URL; a repository is URL + "<name>.git".
	URL string
	// Adverts counts ref advertisements served (GET info/refs: an
	// ls-remote, or the start of a fetch).
	Adverts atomic.Int64
	// UploadPacks counts upload-pack requests (POST git-upload-pack: the
	// negotiation and pack of a fetch).
	UploadPacks atomic.Int64
	// PackBytes counts the bytes of upload-pack responses.
	PackBytes atomic.Int64

	mu sync.Mutex
	// required maps a repository name to the Authorization header its
	// requests must carry (Require).
	required map[string]string
	// seen are the requests' repositories and Authorization headers, in
	// order (Authorizations).
	seen []Request
}

// Request is one request an HTTP server answered: the repository it was
// for and the Authorization header it carried ("" for none).
type Request struct {
	// Repo is the repository's name, as in URL + "<name>.git".
	Repo string
	// Authorization is the request's Authorization header.
	Authorization string
}

// Require makes the server answer 401 (with a WWW-Authenticate challenge,
// as a forge does) to every request for repository name that does not
// carry the Authorization header want.
func (h *HTTP) Require(name, want string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.required == nil {
		h.required = map[string]string{}
	}
	h.required[name] = want
}

// Requests returns the requests answered so far, in order.
func (h *HTTP) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.seen...)
}

// admit records r and reports whether it may be served.
func (h *HTTP) admit(r *http.Request) bool {
	repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git")
	got := r.Header.Get("Authorization")
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, Request{Repo: repo, Authorization: got})
	want, ok := h.required[repo]
	return !ok || got == want
}

// ServeHTTP serves root with git http-backend on 127.0.0.1 until the end
// of the test.
func ServeHTTP(t testing.TB, root *Root) *HTTP {
	t.Helper()
	execPath := Run(t, root.Dir, nil, "--exec-path")
	backend := &cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Env:  append(env(t.TempDir()), "GIT_PROJECT_ROOT="+root.Dir, "GIT_HTTP_EXPORT_ALL=1"),
		// "Not a git repository" for a missing one is what tests ask for.
		Stderr: io.Discard,
	}
	h := &HTTP{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.admit(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/info/refs"):
			h.Adverts.Add(1)
		case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			h.UploadPacks.Add(1)
			cw := &countingWriter{ResponseWriter: w}
			backend.ServeHTTP(cw, r)
			h.PackBytes.Add(cw.n.Load())
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL + "/"
	return h
}

type countingWriter struct {
	http.ResponseWriter
	n atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// lockedBuffer is a bytes.Buffer safe for a process's writes and a test's
// read.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tree describes what is under dir, one sorted line per path: its type,
// permissions and content (or link target); .git as one line, for a
// checkout compared with what it should hold.
func Tree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ".git" {
			out = append(out, ".git/")
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" -> "+target)
		case fi.IsDir():
			out = append(out, fmt.Sprintf("%s/ %o", rel, fi.Mode().Perm()))
		default:
			data, _ := os.ReadFile(p) //nolint:gosec // G304: a test reads the tree it was given
			out = append(out, fmt.Sprintf("%s %o %q", rel, fi.Mode().Perm(), data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}
