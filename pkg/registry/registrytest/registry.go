package registrytest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// pushHeader marks the helper's own push requests. Its value is a random
// token per Registry, so code under test cannot skip accounting by accident.
const pushHeader = "X-Registrytest-Push"

// Registry is an in-process OCI distribution registry for one test. Its zero
// value is not usable; make one with New.
type Registry struct {
	srv       *httptest.Server
	inner     http.Handler
	blobs     *blobStore
	opts      options
	pushToken string

	mu       sync.Mutex
	requests []Request
	rules    []*failState
	gates    []*Gate
	throttle int // bytes per second for blob GETs, 0 for none
}

// New starts a registry on 127.0.0.1 and stops it when the test ends. It
// calls t.Fatalf if an option is invalid.
func New(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	o, err := makeOptions(opts)
	if err != nil {
		t.Fatalf("registrytest.New: %v", err)
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		t.Fatalf("registrytest.New: %v", err)
	}
	blobs := newBlobStore()
	r := &Registry{
		inner:     registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(blobs)),
		blobs:     blobs,
		opts:      o,
		pushToken: hex.EncodeToString(tok[:]),
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(r.srv.Close)
	return r
}

// Host returns the registry's address as "127.0.0.1:PORT", the host part of
// an image reference such as Host()+"/fixture/single:1".
func (r *Registry) Host() string {
	return r.srv.Listener.Addr().String()
}

// URL returns the registry's base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string {
	return r.srv.URL
}

// serveHTTP is the middleware in front of the registry: it lets the helper's
// own pushes straight through, and for everything else applies latency,
// auth and fault rules, answers cross-repository mounts, and records the
// request with its final status.
func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	rec := parsePath(req.Method, req.URL.Path)
	rec.Query = req.URL.RawQuery
	rec.UserAgent = req.UserAgent()
	req = req.WithContext(context.WithValue(req.Context(), repoKey{}, rec.Repo))
	if tok := req.Header.Get(pushHeader); tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(r.pushToken)) == 1 {
		r.inner.ServeHTTP(w, req)
		return
	}

	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		rec.Status = sw.status()
		r.mu.Lock()
		r.requests = append(r.requests, rec)
		r.mu.Unlock()
	}()

	if g := r.takeGate(rec); g != nil {
		close(g.arrived)
		select {
		case <-g.release:
		case <-req.Context().Done():
			sw.WriteHeader(499)
			return
		}
	}
	if d := r.opts.latency; d > 0 {
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
			// The client is gone; record it as nginx does.
			sw.WriteHeader(499)
			return
		}
	}
	if r.opts.auth {
		user, pass, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(r.opts.user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(pass), []byte(r.opts.pass)) != 1 {
			sw.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			writeError(sw, req, http.StatusUnauthorized, "")
			return
		}
	}
	if rule, ok := r.takeFault(rec); ok {
		writeError(sw, req, rule.Status, rule.Body)
		return
	}
	r.mu.Lock()
	rate := r.throttle
	r.mu.Unlock()
	if rate > 0 && rec.Kind == KindBlob && req.Method == http.MethodGet {
		r.inner.ServeHTTP(&throttledWriter{ResponseWriter: sw, rate: rate, done: req.Context().Done()}, req)
		return
	}
	if r.serveMount(sw, req, rec) {
		return
	}
	r.inner.ServeHTTP(sw, req)
}

// statusWriter remembers the status code a handler sent.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
