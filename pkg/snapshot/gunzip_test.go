package snapshot

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/testenv"
)

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGunzipStream runs the node's decompressor through the pipes of
// startGunzip: what it decompresses, and the errors of a corrupt blob, of
// the input and of a close before the end.
func TestGunzipStream(t *testing.T) {
	// Any program that decompresses as igzip -d -c does.
	path := testenv.Tool(t, "gzip", "startGunzip runs a gzip -d -c program")
	data := bytes.Repeat([]byte("stevedore layer "), 1<<18) // 4 MiB: more than the pipes hold
	blob := gzipped(t, data)

	t.Run("whole", func(t *testing.T) {
		s, err := startGunzip(t.Context(), path, bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("decompressed %d bytes, want the %d compressed", len(got), len(data))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		bad := bytes.Clone(blob)
		bad[len(bad)/2] ^= 0xff
		s, err := startGunzip(t.Context(), path, bytes.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()
		if _, err := io.ReadAll(s); err == nil {
			t.Fatal("a corrupt blob decompressed without an error")
		}
	})
	t.Run("input error", func(t *testing.T) {
		cut := errors.New("connection reset")
		s, err := startGunzip(t.Context(), path, io.MultiReader(bytes.NewReader(blob[:len(blob)/2]), errReader{cut}))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()
		if _, err := io.ReadAll(s); !errors.Is(err, cut) {
			t.Fatalf("got %v, want the input's error", err)
		}
	})
	t.Run("closed early", func(t *testing.T) {
		in := &afterClose{r: bytes.NewReader(blob)}
		s, err := startGunzip(t.Context(), path, in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		in.closed.Store(true)
		if in.late.Load() {
			t.Fatal("the input was read after Close returned")
		}
		// Close killed the process, whatever it was doing.
		if s.cmd.ProcessState == nil {
			t.Fatal("Close returned before the process was waited for")
		}
	})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// afterClose reads r in small pieces and records a read after closed is set.
type afterClose struct {
	r      io.Reader
	closed atomic.Bool
	late   atomic.Bool
}

func (a *afterClose) Read(p []byte) (int, error) {
	if a.closed.Load() {
		a.late.Store(true)
	}
	return a.r.Read(p[:min(len(p), 4096)])
}
