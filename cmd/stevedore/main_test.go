package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/stevedore-dev/stevedore/pkg/gitremote/gitremotetest"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"stevedore": func() { os.Exit(Main()) },
	})
}

const imagesDir = "../../testdata/images"

// sourcesDir holds a file a real BuildKit downloaded over http, and the
// keys it computed for it (testdata/sources/README.md).
const sourcesDir = "../../testdata/sources"

// serveHello serves sourcesDir's www/hello.txt as /hello.txt with the
// Last-Modified time BuildKit's fixture server sent and no ETag, so a
// resolve of it gets BuildKit's key.
func serveHello(t *testing.T) *httptest.Server {
	t.Helper()
	content, err := os.ReadFile(filepath.Join(sourcesDir, "www", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := http.ParseTime("Thu, 01 Jan 2026 00:00:00 GMT")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hello.txt" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "hello.txt", mod, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The credentials the private servers of TestScripts want.
const (
	privateToken = "s3cr3t-token"
	// privateGitHeader is BuildKit's header for a git token:
	// printf 'x-access-token:s3cr3t-token' | base64.
	privateGitHeader = "basic eC1hY2Nlc3MtdG9rZW46czNjcjN0LXRva2Vu"
)

// servePrivate serves "only with the token\n" as /private.txt to requests
// with "Authorization: Bearer <privateToken>", and 401 to others.
func servePrivate(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+privateToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		http.ServeContent(w, r, "private.txt", time.Time{}, strings.NewReader("only with the token\n"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// servePrivateGit serves the BuildKit fixture repository as private.git
// over http to requests with privateGitHeader.
func servePrivateGit(t *testing.T) *gitremotetest.HTTP {
	t.Helper()
	root := gitremotetest.NewRoot(t)
	root.CloneBundle(t, "private", filepath.Join(sourcesDir, "git", "repo.bundle"))
	web := gitremotetest.ServeHTTP(t, root)
	web.Require("private", privateGitHeader)
	return web
}

// TestScripts runs testdata/script/*.txtar. Every script gets a registry
// holding the fixture images ($REGISTRY, which also takes pushes, as a
// cache target), their expected keys from expected.json ($SINGLE_KEY0, …)
// a free port for an embedded NATS ($NATS_PORT), a port another listener
// holds while the script runs ($BUSY_PORT), a port nothing listens on
// ($DEAD_PORT), a server answering 503 ($FLAKYHOST), one counting the
// downloads of its file ($COUNTHOST), a proxy to the
// registry that "regproxy stop" takes down ($PROXYREG), a registry slow
// to answer ($SLOWREG), and an http server
// ($HTTPHOST) serving BuildKit's fixture file as /hello.txt, the
// directory of the fixture layouts ($IMAGES, for --oci-layout), and
// servers that want credentials: $PRIVATEHOST (/private.txt, "Bearer
// $PRIVATE_TOKEN") and $PRIVATEGIT (the fixture repository as
// private.git, with the git token $PRIVATE_TOKEN), and a git daemon
// serving it as public.git ($GITDAEMON, for git://). Besides
// testscript's commands, scripts have capture (see captureCmd),
// interrupt (see interruptCmd), and waits for conditions instead of
// sleeps: waitevent, inflight, await and waitwatch (see wait_test.go).
func TestScripts(t *testing.T) {
	reg := registrytest.New(t)
	hello := serveHello(t)
	private := servePrivate(t)
	privateGit := servePrivateGit(t)
	big := bytes.Repeat([]byte("stevedore "), 150_000) // 1.5MB
	var bigGets atomic.Int64
	counted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			bigGets.Add(1)
		}
		http.ServeContent(w, r, "big.bin", time.Time{}, bytes.NewReader(big))
	}))
	t.Cleanup(counted.Close)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "try later", http.StatusServiceUnavailable)
	}))
	t.Cleanup(flaky.Close)
	publicRoot := gitremotetest.NewRoot(t)
	publicRoot.CloneBundle(t, "public", filepath.Join(sourcesDir, "git", "repo.bundle"))
	daemon := gitremotetest.ServeDaemon(t, publicRoot)
	reg.PushLayout(t, filepath.Join(imagesDir, "single"), "demo/single:1")
	reg.PushLayout(t, filepath.Join(imagesDir, "single-retag"), "demo/retag:1")
	reg.PushLayout(t, filepath.Join(imagesDir, "multi"), "demo/multi:1")
	// For output_nats.txtar alone, which counts its blob downloads.
	reg.PushLayout(t, filepath.Join(imagesDir, "single"), "demo/outnats:1")
	slow := registrytest.New(t, registrytest.WithLatency(700*time.Millisecond))
	slow.PushLayout(t, filepath.Join(imagesDir, "single"), "demo/single:1")

	data, err := os.ReadFile(filepath.Join(imagesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Images map[string]struct {
			Digest    string                    `json:"digest"`
			Platforms map[string]map[string]any `json:"platforms"`
		} `json:"images"`
	}
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatal(err)
	}
	images, err := filepath.Abs(imagesDir)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"REGISTRY":       reg.Host(),
		"SINGLE_DIGEST":  fx.Images["single"].Digest,
		"SINGLE_KEY0":    fx.Images["single"].Platforms["linux/amd64"]["key0"].(string),
		"SINGLE_KEY1":    fx.Images["single"].Platforms["linux/amd64"]["key1"].(string),
		"RETAG_KEY0":     fx.Images["single-retag"].Platforms["linux/amd64"]["key0"].(string),
		"MULTI_ARM_KEY0": fx.Images["multi"].Platforms["linux/arm64"]["key0"].(string),
		"MULTI_ARM_KEY1": fx.Images["multi"].Platforms["linux/arm64"]["key1"].(string),
		"SINGLE_LAYER0":  fx.Images["single"].Platforms["linux/amd64"]["layers"].([]any)[0].(string),
		"HTTPHOST":       hello.Listener.Addr().String(),
		// The fixture layouts, for --oci-layout.
		"IMAGES": images,
		// The repository, for scripts about its set-up (Makefile, README).
		"REPO":          repo,
		"SINGLE_CONFIG": fx.Images["single"].Platforms["linux/amd64"]["config"].(string),
		"MULTI_DIGEST":  fx.Images["multi"].Digest,
		// Servers that want credentials.
		"PRIVATEHOST":   private.Listener.Addr().String(),
		"PRIVATEGIT":    strings.TrimSuffix(strings.TrimPrefix(privateGit.URL, "http://"), "/"),
		"PRIVATE_TOKEN": privateToken,
		// A registry that takes 700ms over every answer, holding the
		// fixture single as demo/single:1.
		"SLOWREG": slow.Host(),
		// A server of a 1.5MB file that counts its GETs (httpgets).
		"COUNTHOST": counted.Listener.Addr().String(),
		// A server that answers every request 503.
		"FLAKYHOST": flaky.Listener.Addr().String(),
		// git daemon serving the fixture repository as public.git.
		"GITDAEMON": strings.TrimSuffix(strings.TrimPrefix(daemon.URL, "git://"), "/"),
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){"capture": captureCmd, "interrupt": interruptCmd(t.Context()), "regproxy": regproxyCmd, "waitevent": waiteventCmd, "inflight": inflightCmd, "await": awaitCmd, "waitwatch": waitwatchCmd, "httpgets": httpgetsCmd(&bigGets), "blobgets": blobGetsCmd(reg),
			// regpush NAME REPO:TAG pushes fixture image NAME as REPO:TAG
			// (moving the tag when it exists).
			"regpush": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: regpush NAME REPO:TAG")
				}
				reg.PushLayout(t, filepath.Join(imagesDir, args[0]), args[1])
			}},
		// [ci] holds when the env var CI is set: a script's check that
		// needs a tool then fails instead of skipping. [root] holds when
		// the test runs as root.
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "ci":
				return os.Getenv("CI") != "", nil
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Setup: func(env *testscript.Env) error {
			for k, v := range vars {
				env.Setenv(k, v)
			}
			port, err := freePort(t.Context())
			if err != nil {
				return err
			}
			env.Setenv("NATS_PORT", fmt.Sprint(port))
			busy, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			env.Defer(func() { _ = busy.Close() })
			env.Setenv("BUSY_PORT", fmt.Sprint(busy.Addr().(*net.TCPAddr).Port))
			dead, err := freePort(t.Context())
			if err != nil {
				return err
			}
			env.Setenv("DEAD_PORT", fmt.Sprint(dead))
			proxy, err := startProxy(t.Context(), reg.Host())
			if err != nil {
				return err
			}
			env.Values[proxyKey{}] = proxy
			env.Defer(proxy.stop)
			env.Setenv("PROXYREG", proxy.l.Addr().String())
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("DOCKER_CONFIG", filepath.Join(env.WorkDir, ".docker"))
			return nil
		},
	})
}

func freePort(ctx context.Context) (int, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// httpgetsCmd is "httpgets N": $COUNTHOST has answered N GETs so far.
func httpgetsCmd(gets *atomic.Int64) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: httpgets N")
		}
		if got := fmt.Sprint(gets.Load()); got != args[0] {
			ts.Fatalf("$COUNTHOST answered %s GETs, want %s", got, args[0])
		}
	}
}

// blobGetsCmd is "blobgets REPO N": the registry has answered exactly N
// GETs of blobs of repository REPO since it started (N may be 0).
func blobGetsCmd(reg *registrytest.Registry) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if len(args) != 2 || neg {
			ts.Fatalf("usage: blobgets REPO N")
		}
		want, err := strconv.Atoi(args[1])
		if err != nil {
			ts.Fatalf("blobgets: %v", err)
		}
		got := 0
		for _, r := range reg.Requests() {
			if r.Method == http.MethodGet && r.Kind == registrytest.KindBlob && strings.HasPrefix(r.Path, "/v2/"+args[0]+"/blobs/") {
				got++
			}
		}
		if got != want {
			ts.Fatalf("the registry answered %d GETs of blobs of %s, want %d", got, args[0], want)
		}
	}
}

// captureCmd is "capture VAR REGEXP": it sets $VAR to the first group of
// REGEXP's first match in the last command's stdout, so a later line can
// look for a value the command printed (a manifest digest).
func captureCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! capture")
	}
	if len(args) != 2 {
		ts.Fatalf("usage: capture VAR REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile("stdout"))
	if len(m) < 2 {
		ts.Fatalf("capture: no match for %q (with a group) in stdout", args[1])
	}
	ts.Setenv(args[0], m[1])
}
