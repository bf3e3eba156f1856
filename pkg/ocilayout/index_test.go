package ocilayout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestIndexEmpty: a layout nothing was tagged in has no index.json and
// Index reports an empty OCI index; Resolve finds nothing.
func TestIndexEmpty(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	idx, err := l.Index(ctx)
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	want := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	want.SchemaVersion = 2
	if diff := cmp.Diff(want, idx); diff != "" {
		t.Errorf("Index (-want +got):\n%s", diff)
	}
	if _, err := l.Resolve(ctx, "latest"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve = %v, want ErrNotFound", err)
	}
	// An empty index.json reads as empty too, as BuildKit's client reads it.
	writeFile(t, filepath.Join(l.Root(), IndexFile), "")
	if idx, err := l.Index(ctx); err != nil || len(idx.Manifests) != 0 {
		t.Errorf("Index of an empty file = %v, %v", idx, err)
	}
}

// TestTagShape: the first Tag writes exactly the JSON BuildKit's client
// writes, which parses and re-encodes to the same bytes, and Index and
// Resolve return what was tagged.
func TestTagShape(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	desc := manifestDesc("m")
	if err := l.Tag(ctx, desc, "v1"); err != nil {
		t.Fatalf("Tag: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(l.Root(), IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`+
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,`+
		`"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`, desc.Digest)
	if string(data) != want {
		t.Errorf("index.json =\n%s\nwant\n%s", data, want)
	}
	idx := readIndexFile(t, l)
	got, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(idx, got); diff != "" {
		t.Errorf("Index differs from the file (-file +Index):\n%s", diff)
	}
	r, err := l.Resolve(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(idx.Manifests[0], r); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{BlobsDir, IndexFile, LockFile, LayoutFile}, dirEntries(t, l.Root())); diff != "" {
		t.Errorf("layout root holds a temporary file (-want +got):\n%s", diff)
	}
}

// TestTagReplaces: Tag removes older entries of the same tag that carry no
// containerd image name, keeps entries of other tags and entries containerd
// named (even with the same ref name), keeps the new descriptor's own
// annotations, does not modify the caller's descriptor, and leaves a valid,
// round-tripping index.json after every call.
func TestTagReplaces(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	named := manifestDesc("named")
	named.Annotations = map[string]string{AnnotationContainerdImageName: "docker.io/library/app:latest", AnnotationRefName: "latest"}
	// An index written by an image exporter: one entry containerd named.
	writeFile(t, filepath.Join(l.Root(), IndexFile), mustJSON(t, ocispec.Index{
		Versioned: versioned2, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{named},
	}))

	old, other, newer := manifestDesc("old"), manifestDesc("other"), manifestDesc("new")
	newer.Annotations = map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
	for _, step := range []struct {
		desc ocispec.Descriptor
		tag  string
	}{{old, "latest"}, {other, "v1"}, {newer, "latest"}} {
		if err := l.Tag(ctx, step.desc, step.tag); err != nil {
			t.Fatalf("Tag %s: %v", step.tag, err)
		}
		readIndexFile(t, l)
	}
	if len(newer.Annotations) != 1 {
		t.Errorf("Tag modified the caller's annotations: %v", newer.Annotations)
	}

	tagged := func(d ocispec.Descriptor, tag string) ocispec.Descriptor {
		d.Annotations = map[string]string{AnnotationRefName: tag}
		return d
	}
	wantNewer := newer
	wantNewer.Annotations = map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z", AnnotationRefName: "latest"}
	want := []ocispec.Descriptor{named, tagged(other, "v1"), wantNewer}
	if diff := cmp.Diff(want, readIndexFile(t, l).Manifests); diff != "" {
		t.Errorf("manifests (-want +got):\n%s", diff)
	}
}

var versioned2 = func() (v ocispec.Index) { v.SchemaVersion = 2; return v }().Versioned

// TestResolve: io.containerd.image.name is matched before
// org.opencontainers.image.ref.name, and among several matches of one kind
// the last entry wins.
func TestResolve(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	entry := func(s string, ann ...string) ocispec.Descriptor {
		d := manifestDesc(s)
		d.Annotations = map[string]string{}
		for i := 0; i < len(ann); i += 2 {
			d.Annotations[ann[i]] = ann[i+1]
		}
		return d
	}
	manifests := []ocispec.Descriptor{
		entry("ref-x-1", AnnotationRefName, "x"),
		entry("name-x-1", AnnotationContainerdImageName, "x", AnnotationRefName, "other"),
		entry("name-x-2", AnnotationContainerdImageName, "x"),
		entry("ref-x-2", AnnotationRefName, "x"),
		entry("ref-y-1", AnnotationRefName, "y"),
		entry("ref-y-2", AnnotationRefName, "y", AnnotationContainerdImageName, "docker.io/library/y:latest"),
		entry("ref-z", AnnotationRefName, "z"),
		entry("empty-name", AnnotationContainerdImageName, ""),
	}
	l := newLayout(t)
	writeFile(t, filepath.Join(l.Root(), IndexFile), mustJSON(t, ocispec.Index{
		Versioned: versioned2, MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests,
	}))
	for _, tc := range []struct {
		tag, want string
	}{
		{"x", "name-x-2"}, // containerd name first, last of those
		{"y", "ref-y-2"},  // ref name, last of those
		{"z", "ref-z"},    // the only match
		{"other", "name-x-1"},
		{"docker.io/library/y:latest", "ref-y-2"},
	} {
		got, err := l.Resolve(ctx, tc.tag)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.tag, err)
			continue
		}
		if want := manifestDesc(tc.want).Digest; got.Digest != want {
			t.Errorf("Resolve(%q) = %s, want the entry %q", tc.tag, got.Digest, tc.want)
		}
	}
	if _, err := l.Resolve(ctx, "w"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve of an unknown tag = %v, want ErrNotFound", err)
	}
	if _, err := l.Resolve(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Resolve of the empty tag = %v, want ErrInvalid", err)
	}
}

// TestTagErrors: an empty tag is ErrInvalid; an index.json that is not an
// index makes Tag, Index and Resolve fail with ErrInvalid, and Tag leaves
// the file as it was.
func TestTagErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	if err := l.Tag(ctx, manifestDesc("m"), ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Tag with an empty tag = %v, want ErrInvalid", err)
	}
	const corrupt = `{"schemaVersion":2,"manifests":[`
	path := filepath.Join(l.Root(), IndexFile)
	writeFile(t, path, corrupt)
	if err := l.Tag(ctx, manifestDesc("m"), "t"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Tag over a corrupt index = %v, want ErrInvalid", err)
	}
	if got, _ := os.ReadFile(path); string(got) != corrupt {
		t.Errorf("Tag replaced a corrupt index.json with %s", got)
	}
	if _, err := l.Index(ctx); !errors.Is(err, ErrInvalid) {
		t.Errorf("Index = %v, want ErrInvalid", err)
	}
	if _, err := l.Resolve(ctx, "t"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Resolve = %v, want ErrInvalid", err)
	}
}

// TestTagConcurrent: many goroutines tagging through two *Layout values on
// one directory lose no entry, re-tagging one shared tag leaves exactly one
// entry for it, and a reader polling index.json meanwhile always sees a
// whole, valid index.
func TestTagConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newLayout(t)
	b, err := Open(a.Root())
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, perGoroutine = 16, 8

	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() {
		readerDone <- pollIndex(a, stop)
	}()

	var wg sync.WaitGroup
	for g := range goroutines {
		l := a
		if g%2 == 1 {
			l = b
		}
		wg.Go(func() {
			for i := range perGoroutine {
				tag := fmt.Sprintf("g%d-%d", g, i)
				if err := l.Tag(ctx, manifestDesc(tag), tag); err != nil {
					t.Errorf("Tag %s: %v", tag, err)
				}
				if err := l.Tag(ctx, manifestDesc(tag), "shared"); err != nil {
					t.Errorf("Tag shared: %v", err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-readerDone; err != nil {
		t.Error(err)
	}
	checkAllTagged(t, a, goroutines*perGoroutine, func(n int) string {
		return fmt.Sprintf("g%d-%d", n/perGoroutine, n%perGoroutine)
	})
}

// pollIndex reads index.json until stop closes and returns an error if it
// ever sees one that does not parse.
func pollIndex(l *Layout, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		if _, err := l.readIndex(); err != nil {
			return fmt.Errorf("reader saw a broken index: %w", err)
		}
	}
}

// checkAllTagged checks that every one of n distinct tags (named by name)
// resolves to its own descriptor, and that "shared" has exactly one entry.
func checkAllTagged(t *testing.T, l *Layout, n int, name func(int) string) {
	t.Helper()
	idx := readIndexFile(t, l)
	if len(idx.Manifests) != n+1 {
		t.Errorf("index has %d entries, want %d", len(idx.Manifests), n+1)
	}
	shared := 0
	for _, m := range idx.Manifests {
		if m.Annotations[AnnotationRefName] == "shared" {
			shared++
		}
	}
	if shared != 1 {
		t.Errorf("%d entries tagged shared, want 1", shared)
	}
	for i := range n {
		tag := name(i)
		d, err := l.Resolve(t.Context(), tag)
		if err != nil {
			t.Errorf("Resolve %s: %v", tag, err)
			continue
		}
		if d.Digest != manifestDesc(tag).Digest {
			t.Errorf("Resolve %s = %s, the wrong entry", tag, d.Digest)
		}
	}
}

// helperEnv names the layout a re-executed test binary tags into (see
// TestMain); helperIDEnv is its process number.
const (
	helperEnv   = "OCILAYOUT_TEST_TAG_DIR"
	helperIDEnv = "OCILAYOUT_TEST_TAG_ID"
	helperTags  = 20
)

// TestTagCrossProcess: several processes (this test binary re-executed,
// see TestMain) tag into one layout at once, which only the flock keeps
// from losing entries.
func TestTagCrossProcess(t *testing.T) {
	t.Parallel()
	l := newLayout(t)
	const processes = 4
	var wg sync.WaitGroup
	for p := range processes {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+l.Root(), helperIDEnv+"="+strconv.Itoa(p))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Errorf("process %d: %v\n%s", p, err, out.Bytes())
			}
		})
	}
	wg.Wait()
	checkAllTagged(t, l, processes*helperTags, func(n int) string {
		return fmt.Sprintf("p%d-%d", n/helperTags, n%helperTags)
	})
}

// TestMain runs the tests, or, in a process TestTagCrossProcess started,
// tags helperTags entries (and "shared" after each) and exits.
func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(tagHelper(dir, os.Getenv(helperIDEnv)))
	}
	os.Exit(m.Run())
}

func tagHelper(dir, id string) int {
	l, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	for i := range helperTags {
		tag := fmt.Sprintf("p%s-%d", id, i)
		err := l.Tag(ctx, manifestDesc(tag), tag)
		if err == nil {
			err = l.Tag(ctx, manifestDesc(tag), "shared")
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// TestTagLockFileRemoved: writers stay exclusive while something keeps
// removing the lock file (BuildKit's client removes it after every use):
// concurrent Tags lose no entry.
func TestTagLockFileRemoved(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	l := newLayout(t)
	stop := make(chan struct{})
	removerDone := make(chan struct{})
	go func() {
		defer close(removerDone)
		for {
			select {
			case <-stop:
				return
			default:
				_ = os.Remove(filepath.Join(l.Root(), LockFile))
			}
		}
	}()
	const goroutines, perGoroutine = 8, 8
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				tag := fmt.Sprintf("r%d-%d", g, i)
				if err := l.Tag(ctx, manifestDesc(tag), tag); err != nil {
					t.Errorf("Tag %s: %v", tag, err)
				}
				if err := l.Tag(ctx, manifestDesc(tag), "shared"); err != nil {
					t.Errorf("Tag shared: %v", err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-removerDone
	checkAllTagged(t, l, goroutines*perGoroutine, func(n int) string {
		return fmt.Sprintf("r%d-%d", n/perGoroutine, n%perGoroutine)
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestTagWaitsForLockFile: Tag waits while another process holds
// index.json.lock (as BuildKit's client does while it writes the index),
// proceeds once it is released, and gives up with ctx's cause if ctx ends
// first, leaving index.json untouched.
func TestTagWaitsForLockFile(t *testing.T) {
	t.Parallel()
	l := newLayout(t)
	f, err := os.OpenFile(filepath.Join(l.Root(), LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	cause := errors.New("gave up")
	ctx, cancel := context.WithTimeoutCause(t.Context(), 50*time.Millisecond, cause)
	defer cancel()
	if err := l.Tag(ctx, manifestDesc("m"), "t"); !errors.Is(err, cause) {
		t.Errorf("Tag while locked = %v, want the cause", err)
	}
	if _, err := os.Stat(filepath.Join(l.Root(), IndexFile)); !os.IsNotExist(err) {
		t.Errorf("index.json written while the lock was held (%v)", err)
	}

	done := make(chan error, 1)
	go func() { done <- l.Tag(t.Context(), manifestDesc("m"), "t") }()
	select {
	case err := <-done:
		t.Fatalf("Tag returned while the lock was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := f.Close(); err != nil { // releases the flock
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Tag after release: %v", err)
	}
	if _, err := l.Resolve(t.Context(), "t"); err != nil {
		t.Errorf("Resolve: %v", err)
	}
}
