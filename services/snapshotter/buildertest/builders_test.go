package buildertest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/services/snapshotter/buildertest"
)

// buildTimeout bounds one build or pull by a real daemon.
const buildTimeout = 5 * time.Minute

// fixture is a small image with a file to read and a program to read it.
type fixture struct {
	reg    *registrytest.Registry
	img    buildertest.Image
	marker string
}

// newFixture pushes test/base:v1: layer 0 holds bin/copy (a static
// program of ours: the image has no shell), layer 1 etc/marker.
func newFixture(t *testing.T) fixture {
	t.Helper()
	reg := registrytest.New(t)
	marker := "marker of " + t.Name() + "\n"
	img := buildertest.PushImage(t, reg, "test/base", "v1",
		buildertest.Layer{"bin/copy": {Data: buildertest.CopyTool(t), Mode: 0o755}},
		buildertest.Layer{"etc/marker": {Data: []byte(marker)}},
	)
	return fixture{reg: reg, img: img, marker: marker}
}

// buildContext writes a Dockerfile that starts FROM the fixture, RUNs a
// read of its marker into /out, and COPYs a file of the context.
func (f fixture) buildContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	dockerfile := fmt.Sprintf("FROM %s\nRUN [\"/bin/copy\", \"/etc/marker\", \"/out\"]\nCOPY hello.txt /hello.txt\n", f.img.Ref)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from the context\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkOutput checks that a build's output has what RUN and COPY made.
func (f fixture) checkOutput(t *testing.T, out string) {
	t.Helper()
	for name, want := range map[string]string{"out": f.marker, "hello.txt": "hello from the context\n", "etc/marker": f.marker} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Errorf("the build's output: %v", err)
			continue
		}
		if string(got) != want {
			t.Errorf("the build's /%s = %q, want %q", name, got, want)
		}
	}
}

// layerGets counts the registry's GETs of each of the image's layer blobs.
func (f fixture) layerGets() map[string]int {
	layers := map[string]bool{}
	for _, l := range f.img.Layers {
		layers[l.Digest.String()] = true
	}
	n := map[string]int{}
	for _, r := range f.reg.Requests() {
		if r.Kind == registrytest.KindBlob && r.Method == "GET" && layers[r.Ref] {
			n[r.Ref]++
		}
	}
	return n
}

// TestBuildkitdOnPlainProxySnapshotter runs the harness end to end on the
// baseline: buildkitd's OCI worker on a plain overlayfs snapshotter served
// on a socket (no remote snapshots) builds FROM + RUN + COPY, and so
// fetches every layer itself, once.
func TestBuildkitdOnPlainProxySnapshotter(t *testing.T) {
	t.Parallel()
	buildertest.RequireRoot(t)
	f := newFixture(t)
	sock := buildertest.ServeOverlay(t)
	bk := buildertest.StartBuildkitd(t, buildertest.WithProxySnapshotter(sock), buildertest.WithPlainHTTPRegistry(f.reg.Host()))

	ctx, cancel := context.WithTimeoutCause(t.Context(), buildTimeout, fmt.Errorf("the build took over %s", buildTimeout))
	defer cancel()
	out := t.TempDir()
	if _, err := bk.Build(ctx, buildertest.Build{Context: f.buildContext(t), Output: out}); err != nil {
		t.Fatal(err)
	}
	f.checkOutput(t, out)
	gets := f.layerGets()
	for _, l := range f.img.Layers {
		if gets[l.Digest.String()] != 1 {
			t.Errorf("buildkitd fetched layer %s %d times, want once (a plain snapshotter has no remote snapshots): %v", l.Digest, gets[l.Digest.String()], gets)
		}
	}
}

// TestContainerdOnPlainProxySnapshotter runs the harness end to end on the
// baseline: containerd with the plain overlayfs socket as a proxy
// snapshotter pulls the image through it and runs a container from it.
func TestContainerdOnPlainProxySnapshotter(t *testing.T) {
	t.Parallel()
	buildertest.RequireRoot(t)
	buildertest.Tool(t, "runc")
	f := newFixture(t)
	ctrd := buildertest.StartContainerd(t, buildertest.ServeOverlay(t))

	ctx, cancel := context.WithTimeoutCause(t.Context(), buildTimeout, fmt.Errorf("the pull took over %s", buildTimeout))
	defer cancel()
	if _, err := ctrd.Ctr(ctx, "image", "pull", "--plain-http", "--snapshotter", buildertest.ProxyPluginName, f.img.Ref); err != nil {
		t.Fatal(err)
	}
	out, err := ctrd.Ctr(ctx, "run", "--rm", "--snapshotter", buildertest.ProxyPluginName, f.img.Ref, containerID(), "/bin/copy", "/etc/marker")
	if err != nil {
		t.Fatal(err)
	}
	if out != f.marker {
		t.Errorf("ctr run printed %q, want %q", out, f.marker)
	}

	// The CRI-style pull (containerd's v2 Go client against this
	// containerd) works too; the plain snapshotter answers its labelled
	// Prepares like any other, so the client fetches every layer.
	other := buildertest.PushImage(t, f.reg, "test/cri", "v1",
		buildertest.Layer{"bin/copy": {Data: buildertest.CopyTool(t), Mode: 0o755}},
		buildertest.Layer{"etc/cri": {Data: []byte("cri pull\n")}},
	)
	f.reg.Reset()
	if err := ctrd.PullCRI(ctx, other.Ref); err != nil {
		t.Fatal(err)
	}
	fetched := map[string]bool{}
	for _, r := range f.reg.Requests() {
		if r.Kind == registrytest.KindBlob && r.Method == "GET" && r.UserAgent == buildertest.CRIUserAgent {
			fetched[r.Ref] = true
		}
	}
	// Its first layer (bin/copy) is the first image's: that chain is
	// already on the node. The second is new.
	if l := other.Layers[1]; !fetched[l.Digest.String()] {
		t.Errorf("the CRI-style pull did not fetch layer %s with its User-Agent %q: %+v", l.Digest, buildertest.CRIUserAgent, f.reg.Requests())
	}
	out, err = ctrd.Ctr(ctx, "run", "--rm", "--snapshotter", buildertest.ProxyPluginName, other.Ref, containerID(), "/bin/copy", "/etc/cri")
	if err != nil {
		t.Fatal(err)
	}
	if out != "cri pull\n" {
		t.Errorf("ctr run of the CRI-pulled image printed %q, want %q", out, "cri pull\n")
	}
}

// containerID is a new container id.
func containerID() string {
	return fmt.Sprintf("bt-%x", time.Now().UnixNano())
}
