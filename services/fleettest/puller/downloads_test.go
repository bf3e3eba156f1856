package puller_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/services/fleettest"
	"github.com/stevedore-dev/stevedore/services/puller"
	"github.com/stevedore-dev/stevedore/services/snapshotter"
)

// A puller and a snapshotter running apart (two replicas, as in a compose
// fleet) share the puller's http downloads through a directory both are
// given: the file is downloaded once. A snapshotter that does not see the
// puller's directory, or finds there a copy that is not the file the puller
// hashed, downloads it again and still makes the right snapshot.
func TestHTTPSharedDownloads(t *testing.T) {
	t.Parallel()
	content := helloContent(t)
	for _, tc := range []struct {
		name string
		// snapshotterDir picks the snapshotter's Downloads given the
		// puller's; "" gives it none.
		snapshotterDir func(shared string) string
		// prepare runs on the puller's directory before the pull.
		prepare func(t *testing.T, shared string)
		gets    int
	}{
		{name: "shared", snapshotterDir: func(shared string) string { return shared }, gets: 1},
		{name: "another node", snapshotterDir: func(string) string { return t.TempDir() }, gets: 2},
		{name: "not set", snapshotterDir: func(string) string { return "" }, gets: 2},
		{name: "altered", snapshotterDir: func(shared string) string { return shared }, gets: 2,
			prepare: func(t *testing.T, shared string) {
				// The same size under the file's digest: the puller keeps
				// what is there, the snapshotter must not take it.
				d := digest.Digest(helloDigest)
				dir := filepath.Join(shared, "blobs", d.Algorithm().String())
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, d.Encoded()), bytes.Repeat([]byte("x"), len(content)), 0o644); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			shared := filepath.Join(t.TempDir(), "http-downloads")
			if tc.prepare != nil {
				tc.prepare(t, shared)
			}
			s := fleettest.New(t)
			s.Puller(t, func(c *puller.Config) { c.Downloads = shared })
			_, svc := s.Snapshotter(t, func(c *snapshotter.Config) { c.Downloads = tc.snapshotterDir(shared) })
			srv := newFileServer(t, content, true)

			rec, _ := s.Request(t, srv.url(), nil, "", true)
			ready := fleettest.Ready(t, rec)
			if _, data := snapshotFile(t, svc, ready.SnapshotKey, "hello.txt"); !bytes.Equal(data, content) {
				t.Errorf("snapshot holds %q, want %q", data, content)
			}
			if got := srv.count(http.MethodGet); got != tc.gets {
				t.Errorf("%d GETs, want %d", got, tc.gets)
			}
		})
	}
}
