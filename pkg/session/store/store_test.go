package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/nats-io/nats.go"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/store"
)

// fixture is a served session: one store "layout" holding blobs.
type fixture struct {
	env    *bustest.Env
	id     string
	server *session.Server
	layout *ocilayout.Layout
	// reader is the connection readers use (the server has its own).
	reader *nats.Conn
}

func start(t *testing.T) *fixture {
	t.Helper()
	env := bustest.Start(t, bus.Topology{})
	l, err := ocilayout.Create(filepath.Join(t.TempDir(), "layout"))
	if err != nil {
		t.Fatal(err)
	}
	serving, _ := env.Connect(t, "client")
	reading, _ := env.Connect(t, "service")
	f := &fixture{env: env, id: session.NewID(), layout: l, reader: reading}
	f.server, err = session.Serve(t.Context(), serving, f.id, session.Config{Protocols: stores(t, map[string]*ocilayout.Layout{"layout": l})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.server.Stop() })
	return f
}

// blob stores n random bytes and returns their descriptor.
func (f *fixture) blob(t *testing.T, n int) (ocispec.Descriptor, []byte) {
	t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(n)}
	if _, err := f.layout.WriteBlobBytes(t.Context(), desc, data); err != nil {
		t.Fatal(err)
	}
	return desc, data
}

func (f *fixture) client(t *testing.T, opts ...session.Option) *store.Client {
	t.Helper()
	c, err := session.NewClient(f.reader, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return store.NewClient(c)
}

// stores is the protocol serving layouts.
func stores(t *testing.T, layouts map[string]*ocilayout.Layout) []session.Protocol {
	t.Helper()
	srv, err := store.NewServer(layouts)
	if err != nil {
		t.Fatal(err)
	}
	return []session.Protocol{srv}
}

func readAll(t *testing.T, c *store.Client, id string, desc ocispec.Descriptor) ([]byte, error) {
	t.Helper()
	rc, err := c.Open(t.Context(), id, "layout", desc)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	return io.ReadAll(rc)
}

// TestRoundTrip: a multi-MiB blob comes back whole through the default
// chunks (several of them, read ahead), with its size from Stat and its
// digest checked; a small one through ReadBlob.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	f := start(t)
	desc, data := f.blob(t, 5<<20+12345)
	c := f.client(t)

	got, err := readAll(t, c, f.id, desc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the blob's %d", len(got), len(data))
	}
	size, err := c.Stat(t.Context(), f.id, "layout", desc.Digest)
	if err != nil || size != desc.Size {
		t.Errorf("Stat = %d, %v; want %d", size, err, desc.Size)
	}
	// Unknown size: learnt from the first reply.
	got, err = readAll(t, c, f.id, ocispec.Descriptor{Digest: desc.Digest, Size: -1})
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("read with unknown size: %d bytes, %v", len(got), err)
	}

	small, sdata := f.blob(t, 300)
	got, err = c.ReadBlob(t.Context(), f.id, "layout", small, 4<<20)
	if err != nil || !bytes.Equal(got, sdata) {
		t.Errorf("ReadBlob = %d bytes, %v", len(got), err)
	}
	if _, err := c.ReadBlob(t.Context(), f.id, "layout", ocispec.Descriptor{Digest: desc.Digest, Size: -1}, 1<<20); !errors.Is(err, failure.ErrInvalid) || !strings.Contains(err.Error(), "is too large") {
		t.Errorf("ReadBlob of a too large blob: %v, want ErrInvalid 'is too large'", err)
	}

	empty, _ := f.blob(t, 0)
	got, err = readAll(t, c, f.id, empty)
	if err != nil || len(got) != 0 {
		t.Errorf("empty blob: %d bytes, %v", len(got), err)
	}
}

// TestRanges: the wire protocol answers ranges, clamps a long one to
// MaxChunkSize and refuses one outside the blob; a reader with a chunk
// size that does not divide the blob reads it whole.
func TestRanges(t *testing.T) {
	t.Parallel()
	f := start(t)
	desc, data := f.blob(t, 3*session.MaxChunkSize/2)
	ask := func(off, n int64) (*nats.Msg, error) {
		body, _ := json.Marshal(store.BlobRequest{Store: "layout", Digest: desc.Digest, Offset: off, Length: n})
		return f.reader.Request(session.Subject(f.id, store.OpBlob), body, 5*time.Second)
	}
	for _, tc := range []struct {
		name      string
		off, n    int64
		want      []byte
		errorCode string
	}{
		{"start", 0, 10, data[:10], ""},
		{"middle", 1000, 4096, data[1000:5096], ""},
		{"clamped", 0, 1 << 30, data[:session.MaxChunkSize], ""},
		{"past the end", desc.Size - 5, 100, data[desc.Size-5:], ""},
		{"at the end", desc.Size, 100, []byte{}, ""},
		{"beyond the end", desc.Size + 1, 100, nil, session.CodeInvalid},
		{"negative", -1, 100, nil, session.CodeInvalid},
		{"no length", 0, 0, nil, session.CodeInvalid},
	} {
		m, err := ask(tc.off, tc.n)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := m.Header.Get(session.HeaderError); got != tc.errorCode {
			t.Errorf("%s: error code %q (%s), want %q", tc.name, got, m.Data, tc.errorCode)
			continue
		}
		if tc.errorCode != "" {
			continue
		}
		if !bytes.Equal(m.Data, tc.want) {
			t.Errorf("%s: %d bytes, not the %d wanted", tc.name, len(m.Data), len(tc.want))
		}
		if got := m.Header.Get(session.HeaderSize); got != "786432" {
			t.Errorf("%s: %s = %q, want 786432", tc.name, session.HeaderSize, got)
		}
	}

	for _, chunk := range []int{1, 1000, 65536} {
		c := f.client(t, session.WithChunkSize(chunk), session.WithReadAhead(3))
		small := desc
		if chunk == 1 {
			var sdata []byte
			small, sdata = f.blob(t, 999)
			got, err := readAll(t, c, f.id, small)
			if err != nil || !bytes.Equal(got, sdata) {
				t.Errorf("chunk %d: %d bytes, %v", chunk, len(got), err)
			}
			continue
		}
		got, err := readAll(t, c, f.id, small)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("chunk %d: %d bytes, %v", chunk, len(got), err)
		}
	}
}

// TestConcurrentReaders: readers of the same and of different blobs, at
// once, each get their own bytes.
func TestConcurrentReaders(t *testing.T) {
	t.Parallel()
	f := start(t)
	type blob struct {
		desc ocispec.Descriptor
		data []byte
	}
	var blobs []blob
	for i := range 3 {
		d, b := f.blob(t, 1<<20+i*7919)
		blobs = append(blobs, blob{d, b})
	}
	c := f.client(t, session.WithChunkSize(64<<10))
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 12 {
		b := blobs[i%len(blobs)]
		wg.Go(func() {
			got, err := readAll(t, c, f.id, b.desc)
			switch {
			case err != nil:
				errs <- err
			case !bytes.Equal(got, b.data):
				errs <- errors.New("reader " + b.desc.Digest.String() + " got other bytes")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestErrors: what each failure reads as, and its bus class.
func TestErrors(t *testing.T) {
	t.Parallel()
	f := start(t)
	desc, _ := f.blob(t, 2000)
	c := f.client(t, session.WithChunkSize(512))
	missing := ocispec.Descriptor{Digest: digest.FromString("absent"), Size: 6}

	t.Run("no such session", func(t *testing.T) {
		_, err := readAll(t, c, "nobody", desc)
		var nse *session.NoSessionError
		if !errors.As(err, &nse) || err.Error() != "no active session for nobody" {
			t.Fatalf("err = %v, want *NoSessionError 'no active session for nobody'", err)
		}
		if !errors.Is(err, session.ErrNoSession) || !errors.Is(err, nats.ErrNoResponders) || !failure.Permanent(err) || failure.Code(err) != "not-found" {
			t.Errorf("err %v: not ErrNoSession, ErrNoResponders and permanent not-found", err)
		}
	})
	t.Run("no such store", func(t *testing.T) {
		rc, err := c.Open(t.Context(), f.id, "other", desc)
		if err == nil {
			_ = rc.Close()
		}
		if !errors.Is(err, failure.ErrNotFound) || !strings.Contains(err.Error(), `has no store "other"`) {
			t.Errorf("err = %v, want ErrNotFound 'has no store'", err)
		}
	})
	t.Run("no such blob", func(t *testing.T) {
		_, err := c.Stat(t.Context(), f.id, "layout", missing.Digest)
		if !errors.Is(err, failure.ErrNotFound) || !strings.Contains(err.Error(), "not found in store") {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		for _, id := range []string{"", "a.b", "a>", strings.Repeat("x", 129)} {
			if _, err := c.Stat(t.Context(), id, "layout", desc.Digest); !errors.Is(err, failure.ErrInvalid) || !failure.Permanent(err) {
				t.Errorf("id %q: err = %v, want ErrInvalid", id, err)
			}
		}
		if _, err := c.Stat(t.Context(), f.id, "layout", "sha256:short"); !errors.Is(err, failure.ErrInvalid) {
			t.Errorf("bad digest: err = %v, want ErrInvalid", err)
		}
	})
	t.Run("wrong size", func(t *testing.T) {
		_, err := readAll(t, c, f.id, ocispec.Descriptor{Digest: desc.Digest, Size: desc.Size + 1})
		if !errors.Is(err, session.ErrVerify) || !errors.Is(err, failure.ErrInvalid) {
			t.Errorf("err = %v, want ErrVerify", err)
		}
	})
	t.Run("wrong digest", func(t *testing.T) {
		// A blob file whose content is not its digest's, as a damaged
		// layout would hold: the reader fails at the end, not with EOF.
		good, _ := f.blob(t, 3000)
		p := filepath.Join(f.layout.Root(), "blobs", "sha256", good.Digest.Encoded())
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, 3000), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readAll(t, c, f.id, good)
		if !errors.Is(err, session.ErrVerify) || !strings.Contains(err.Error(), "content has digest") {
			t.Errorf("err = %v, want ErrVerify 'content has digest'", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// Someone subscribes but never answers: after the timeout the
		// session counts as gone.
		mute, _ := f.env.Connect(t, "mute")
		sub, err := mute.Subscribe(session.Filter("mute"), func(*nats.Msg) {})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		_ = mute.Flush()
		slow := f.client(t, session.WithRequestTimeout(200*time.Millisecond))
		_, err = slow.Stat(t.Context(), "mute", "layout", desc.Digest)
		var nse *session.NoSessionError
		if !errors.As(err, &nse) || !strings.Contains(nse.Cause.Error(), "did not answer within 200ms") {
			t.Errorf("err = %v, want *NoSessionError caused by the timeout", err)
		}
	})
	t.Run("options", func(t *testing.T) {
		for _, o := range []session.Option{session.WithChunkSize(0), session.WithChunkSize(session.MaxChunkSize + 1), session.WithReadAhead(0), session.WithRequestTimeout(0)} {
			if _, err := session.NewClient(f.reader, o); err == nil {
				t.Error("NewClient accepted a bad option")
			}
		}
	})
}

// TestStoppedMidRead: a session that stops serving while a blob is read
// fails the read with BuildKit's message (after the chunks already
// fetched), and nothing of the reader or the server is left running.
// Not parallel: it counts goroutines.
func TestStoppedMidRead(t *testing.T) {
	f := start(t)
	desc, data := f.blob(t, 4<<20)
	c := f.client(t, session.WithChunkSize(64<<10), session.WithReadAhead(2))
	warmUp(t, c, f.id, desc)
	baseline := runtime.NumGoroutine()

	rc, err := c.Open(t.Context(), f.id, "layout", desc)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 256<<10)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, data[:len(head)]) {
		t.Fatal("the first bytes differ")
	}
	if err := f.server.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	var nse *session.NoSessionError
	if !errors.As(err, &nse) || err.Error() != "no active session for "+f.id || !failure.Permanent(err) {
		t.Fatalf("read after Stop: %v, want *NoSessionError 'no active session for %s'", err, f.id)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(t.Context(), f.id, "layout", desc); !errors.Is(err, session.ErrNoSession) {
		t.Errorf("Open after Stop: %v, want ErrNoSession", err)
	}
	waitGoroutines(t, baseline)

	// A reader closed halfway stops its read-ahead too.
	g := start(t)
	desc2, _ := g.blob(t, 2<<20)
	c2 := g.client(t, session.WithChunkSize(32<<10), session.WithReadAhead(4))
	warmUp(t, c2, g.id, desc2)
	baseline2 := runtime.NumGoroutine()
	rc, err = c2.Open(t.Context(), g.id, "layout", desc2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close succeeded")
	}
	waitGoroutines(t, baseline2)
}

// TestServeEndsWithContext: the end of Serve's ctx stops the session.
func TestServeEndsWithContext(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bus.Topology{})
	l, err := ocilayout.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if _, err := l.WriteBlobBytes(t.Context(), desc, data); err != nil {
		t.Fatal(err)
	}
	nc, _ := env.Connect(t, "client")
	ctx, cancel := context.WithCancelCause(t.Context())
	srv, err := session.Serve(ctx, nc, "ending", session.Config{Protocols: stores(t, map[string]*ocilayout.Layout{"s": l})})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := session.NewClient(env.NC)
	if err != nil {
		t.Fatal(err)
	}
	c := store.NewClient(sc)
	if got, err := c.ReadBlob(t.Context(), "ending", "s", desc, 100); err != nil || string(got) != "hello" {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
	cancel(errors.New("build over"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Stat(t.Context(), "ending", "s", desc.Digest)
		if errors.Is(err, session.ErrNoSession) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stat after the end of Serve's ctx: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("Stop after the ctx ended: %v", err)
	}
	if _, err := session.Serve(t.Context(), nc, "bad.id", session.Config{}); !errors.Is(err, failure.ErrInvalid) {
		t.Errorf("Serve with a bad id: %v", err)
	}
}

// warmUp makes a first request, so that the connection's reply
// subscription (and its goroutine) exists before goroutines are counted.
func warmUp(t *testing.T, c *store.Client, id string, desc ocispec.Descriptor) {
	t.Helper()
	if _, err := c.Stat(t.Context(), id, "layout", desc.Digest); err != nil {
		t.Fatal(err)
	}
}

// waitGoroutines fails the test unless the goroutine count comes back to
// at most baseline.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNewServer: a store without a layout is refused, and a session
// cannot serve its stores twice.
func TestNewServer(t *testing.T) {
	t.Parallel()
	if _, err := store.NewServer(map[string]*ocilayout.Layout{"nil": nil}); err == nil {
		t.Error("NewServer accepted a store without a layout")
	}
	env := bustest.Start(t, bus.Topology{})
	twice := append(stores(t, nil), stores(t, nil)...)
	if _, err := session.Serve(t.Context(), env.NC, session.NewID(), session.Config{Protocols: twice}); err == nil || !strings.Contains(err.Error(), "answered twice") {
		t.Errorf("Serve with two store servers: %v, want 'answered twice'", err)
	}
}
