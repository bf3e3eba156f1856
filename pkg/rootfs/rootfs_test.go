package rootfs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/rootfs"
)

// serve starts a Server for node "n1.example" that streams body for key
// "k1" and cuts the stream of key "cut" halfway; it grants build "b1"
// only.
func serve(t *testing.T) *bustest.Env {
	t.Helper()
	env := bustest.Start(t, bus.Topology{})
	src := rootfs.SourceFunc(func(_ context.Context, key string, w io.Writer) error {
		switch key {
		case "k1":
			_, err := io.WriteString(w, body)
			return err
		case "cut":
			_, _ = io.WriteString(w, body[:len(body)/2])
			return errors.New("disk gone")
		}
		return errors.New("no such snapshot")
	})
	srv, err := rootfs.NewServer(rootfs.ServerConfig{
		Node: "n1.example",
		Allow: func(_ context.Context, req rootfs.Request) error {
			if req.Build != "b1" {
				return errors.New("build " + req.Build + " did not get this snapshot")
			}
			return nil
		},
	}, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, env.NC) }()
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// Serve has subscribed once a request is answered.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n1.example", rootfs.Request{Build: "nobody", SnapshotKey: "k1"}); errors.Is(err, rootfs.ErrRefused) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return env
}

var body = strings.Repeat("tar bytes ", 100000)

func TestStreamGranted(t *testing.T) {
	t.Parallel()
	env := serve(t)
	s, err := rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n1.example", rootfs.Request{Build: "b1", SnapshotKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != body {
		t.Errorf("stream: %d bytes, want %d", len(got), len(body))
	}
	if err := s.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestStreamCutIsIncomplete(t *testing.T) {
	t.Parallel()
	env := serve(t)
	s, err := rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n1.example", rootfs.Request{Build: "b1", SnapshotKey: "cut"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Verify(); !errors.Is(err, rootfs.ErrIncomplete) {
		t.Errorf("Verify of a cut stream = %v, want ErrIncomplete", err)
	}
}

// TestStreamCorruptIsIncomplete: a stream whose bytes changed on the way
// (one byte flipped, its length and trailer as the node sent them) fails
// Verify.
func TestStreamCorruptIsIncomplete(t *testing.T) {
	t.Parallel()
	env := serve(t)
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil {
			resp.Body = &flipByte{ReadCloser: resp.Body, at: int64(len(body) / 3)}
		}
		return resp, err
	})}
	s, err := rootfs.Open(t.Context(), env.NC, hc, "n1.example", rootfs.Request{Build: "b1", SnapshotKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(body) || string(got) == body {
		t.Fatalf("stream: %d bytes, equal to the body: %v; want a corrupt copy of its %d bytes", len(got), string(got) == body, len(body))
	}
	if err := s.Verify(); !errors.Is(err, rootfs.ErrIncomplete) {
		t.Errorf("Verify of a corrupt stream = %v, want ErrIncomplete", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// flipByte flips the bits of the byte at offset at of what it reads.
type flipByte struct {
	io.ReadCloser
	off, at int64
}

func (f *flipByte) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func TestRefusedAndUnreachable(t *testing.T) {
	t.Parallel()
	env := serve(t)
	_, err := rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n1.example", rootfs.Request{Build: "b2", SnapshotKey: "k1"})
	if !errors.Is(err, rootfs.ErrRefused) || !strings.Contains(err.Error(), "did not get this snapshot") {
		t.Errorf("another build's request = %v, want ErrRefused with the node's reason", err)
	}
	_, err = rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n2", rootfs.Request{Build: "b1", SnapshotKey: "k1"})
	if !errors.Is(err, rootfs.ErrUnreachable) {
		t.Errorf("a node nobody serves = %v, want ErrUnreachable", err)
	}
}

// TestGrantOnce: a grant's URL streams once.
func TestGrantOnce(t *testing.T) {
	t.Parallel()
	env := serve(t)
	s, err := rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n1.example", rootfs.Request{Build: "b1", SnapshotKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	url := s.URL()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second GET of a grant: %s, want 404", resp.Status)
	}
}

func TestSubject(t *testing.T) {
	t.Parallel()
	if got, want := rootfs.Subject("host.example.com"), "stevedore.rootfs.host_example_com"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	if got, want := rootfs.Subject("a*b>c d"), "stevedore.rootfs.a_b_c_d"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
}

// grantURL finds a grant's URL in what a spy read.
var grantURL = regexp.MustCompile(`http://[^"\s]+/rootfs/[0-9a-f]+`)

// Issue 12, shared replies: clients of one fleet share the client user,
// so they may read each other's replies (_INBOX_client.>). A spy
// subscribed to every reply reads a grant meant for another client and
// races it to the one-use URL. The grant is sealed to the asking client's
// key: the spy finds no URL to use, and the asking client gets its tar.
func TestSecurityGrantSealed(t *testing.T) {
	t.Parallel()
	env := serve(t)
	spyNC, _ := env.Connect(t, "spy")
	var mu sync.Mutex
	var seen, stolen []string
	if _, err := spyNC.Subscribe(">", func(m *nats.Msg) {
		for _, u := range grantURL.FindAllString(string(m.Data), -1) {
			mu.Lock()
			seen = append(seen, u)
			mu.Unlock()
			resp, err := http.Get(u) //nolint:noctx // the spy's race, on its own goroutine
			if err != nil {
				continue
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				mu.Lock()
				stolen = append(stolen, fmt.Sprintf("%s (%d bytes)", u, n))
				mu.Unlock()
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spyNC.Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := rootfs.Open(t.Context(), env.NC, http.DefaultClient, "n1.example", rootfs.Request{Build: "b1", SnapshotKey: "k1"})
	if err == nil {
		if err = s.Verify(); err == nil {
			_ = s.Close()
		}
	}
	_ = spyNC.Flush()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 {
		t.Errorf("a spy on the replies read grant URLs %v", seen)
	}
	if len(stolen) > 0 {
		t.Errorf("a spy on the replies downloaded another client's root filesystem: %v", stolen)
	}
	if err != nil {
		t.Errorf("the asking client's stream: %v", err)
	}
}
