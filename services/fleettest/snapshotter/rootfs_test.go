package snapshotter_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"

	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/rootfs"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// TestRootfsGrantedToItsBuildOnly: the node streams the root filesystem
// of its snapshot to the build that made it and to one answered with a
// cache hit of it, the image's files in one tar that verifies; a build
// its events did not answer with it is refused.
func TestRootfsGrantedToItsBuildOnly(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	s := fleettest.New(t)
	s.Puller(t)
	node, _ := s.Snapshotter(t)
	ref := s.Push(t, "single", "rootfs/single:1")
	rec, made := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	ready := fleettest.Ready(t, rec)
	rec, hit := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	if _, ok := fleettest.PullEnd(t, rec).Data.(events.CacheHit); !ok {
		t.Fatal("the second pull is not a cache hit")
	}

	for _, build := range []string{made, hit} {
		st, err := rootfs.Open(t.Context(), s.Env.NC, http.DefaultClient, node.Name, rootfs.Request{Build: build, SnapshotKey: ready.SnapshotKey})
		if err != nil {
			t.Fatalf("build %s: %v", build, err)
		}
		dir := t.TempDir()
		if _, err := archive.Apply(t.Context(), dir, st); err != nil {
			t.Fatalf("build %s: apply the stream: %v", build, err)
		}
		if err := st.Verify(); err != nil {
			t.Errorf("build %s: Verify: %v", build, err)
		}
		_ = st.Close()
		for name, want := range singleFiles {
			if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
				t.Errorf("build %s: %s = %q, %v; want %q", build, name, got, err, want)
			}
		}
	}

	other := client.NewBuildID()
	if _, err := rootfs.Open(t.Context(), s.Env.NC, http.DefaultClient, node.Name, rootfs.Request{Build: other, SnapshotKey: ready.SnapshotKey}); !errors.Is(err, rootfs.ErrRefused) {
		t.Errorf("a build not answered with the snapshot: %v, want ErrRefused", err)
	}
}
