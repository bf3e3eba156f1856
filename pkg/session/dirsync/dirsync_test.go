package dirsync_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/failure"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/session/dirsync"
)

// serveDir serves dir as "context" in a new session and returns a client
// on another connection, the session's server and its directories'.
func serveDir(t *testing.T, dir string) (*dirsync.Client, *session.Server, *dirsync.Server) {
	t.Helper()
	env := bustest.Start(t, bus.Topology{})
	serving, _ := env.Connect(t, "client")
	reading, _ := env.Connect(t, "service")
	dirs, err := dirsync.NewServer(map[string]string{"context": dir})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := session.Serve(t.Context(), serving, session.NewID(), session.Config{Protocols: []session.Protocol{dirs}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	c, err := session.NewClient(reading, session.WithChunkSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	return dirsync.NewClient(c), srv, dirs
}

// collector is a FileWriter that keeps what it gets.
type collector struct {
	files map[string]*bytes.Buffer
	done  []string
}

func (c *collector) WriteAt(e dirsync.Entry, data []byte, off int64) error {
	b := c.files[e.Path]
	if b == nil {
		b = &bytes.Buffer{}
		c.files[e.Path] = b
	}
	if int64(b.Len()) != off {
		return fmt.Errorf("%s: chunk at %d after %d bytes", e.Path, off, b.Len())
	}
	b.Write(data)
	return nil
}

func (c *collector) Done(e dirsync.Entry) error {
	c.done = append(c.done, e.Path)
	return nil
}

// A listing of many paths comes in several pages, in walk order, with
// every path once; reading the files returns their bytes, small files
// many per request and a large one in chunks.
func TestDirListAndRead(t *testing.T) {
	dir := t.TempDir()
	want := map[string][]byte{}
	for i := range 4000 {
		p := fmt.Sprintf("d%d/f%04d", i%7, i)
		want[p] = []byte(strings.Repeat("x", i%50+1))
	}
	big := make([]byte, 300<<10)
	_, _ = rand.Read(big)
	want["big.bin"] = big
	for p, data := range want {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	c, srv, dirs := serveDir(t, dir)
	entries, err := c.List(t.Context(), srv.ID(), "context", dirsync.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if st := dirs.Stats(); st.Listings < 2 {
		t.Errorf("the listing of 4,000 paths took %d page, want several", st.Listings)
	}
	seen := map[string]bool{}
	var files []dirsync.Entry
	for i, e := range entries {
		if seen[e.Path] {
			t.Fatalf("%s listed twice", e.Path)
		}
		seen[e.Path] = true
		if i > 0 && entries[i-1].Path >= e.Path && !strings.HasPrefix(e.Path, entries[i-1].Path+"/") {
			t.Errorf("%s listed after %s", e.Path, entries[i-1].Path)
		}
		if e.Mode.IsRegular() {
			if e.Mode.Perm() != 0o640 || e.Size != int64(len(want[e.Path])) {
				t.Errorf("%s: mode %v size %d", e.Path, e.Mode, e.Size)
			}
			files = append(files, e)
		}
	}
	if len(files) != len(want) || len(entries) != len(want)+7 {
		t.Fatalf("listed %d files of %d entries, want %d and 7 directories", len(files), len(entries), len(want))
	}
	got := &collector{files: map[string]*bytes.Buffer{}}
	if err := c.ReadFiles(t.Context(), srv.ID(), "context", files, got); err != nil {
		t.Fatal(err)
	}
	for p, data := range want {
		if b := got.files[p]; b == nil || !bytes.Equal(b.Bytes(), data) {
			t.Errorf("%s: read differs", p)
		}
	}
	if len(got.done) != len(want) {
		t.Errorf("%d files done, want %d", len(got.done), len(want))
	}
	if st := dirs.Stats(); st.Files != int64(len(want)) {
		t.Errorf("served %d files, want %d", st.Files, len(want))
	}
}

// Reads that cannot be answered fail with a class: a file that shrank
// since the listing, a path out of the directory, a directory the session
// does not serve, a gone session.
func TestDirErrors(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, srv, _ := serveDir(t, dir)
	entries, err := c.List(t.Context(), srv.ID(), "context", dirsync.Filter{})
	if err != nil || len(entries) != 2 {
		t.Fatalf("List = %v, %v", entries, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("0123"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := dirsync.Entry{Path: "f", Mode: 0o644, Size: 10}
	err = c.ReadFiles(t.Context(), srv.ID(), "context", []dirsync.Entry{f}, &collector{files: map[string]*bytes.Buffer{}})
	if !errors.Is(err, session.ErrVerify) || !strings.Contains(err.Error(), "changed during the transfer") {
		t.Errorf("shrunk file: %v, want ErrVerify", err)
	}
	for _, p := range []string{"escape", "../secret", "/etc/passwd", "a/../f"} {
		got := &collector{files: map[string]*bytes.Buffer{}}
		err := c.ReadFiles(t.Context(), srv.ID(), "context", []dirsync.Entry{{Path: p, Mode: 0o644, Size: 6}}, got)
		if err == nil || len(got.files) != 0 {
			t.Errorf("read of %q: %v, %d files; want a refusal", p, err, len(got.files))
		}
	}
	if _, err := c.List(t.Context(), srv.ID(), "other", dirsync.Filter{}); !errors.Is(err, failure.ErrNotFound) {
		t.Errorf("unknown directory: %v, want ErrNotFound", err)
	}
	if _, err := c.List(t.Context(), srv.ID(), "context", dirsync.Filter{IncludePatterns: []string{"["}}); err == nil {
		t.Error("a bad pattern listed")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	var gone *session.NoSessionError
	if _, err := c.List(t.Context(), srv.ID(), "context", dirsync.Filter{}); !errors.As(err, &gone) || err.Error() != "no active session for "+srv.ID() {
		t.Errorf("gone session: %v", err)
	}
}
