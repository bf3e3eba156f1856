package buildertest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/services/snapshotter/buildertest"
)

// fromBuilder reports whether a registry request came from a builder
// daemon (buildkitd, containerd) or the test's CRI-style pull, and not from
// the fleet.
func fromBuilder(r registrytest.Request) bool {
	return strings.HasPrefix(r.UserAgent, "buildkit/") ||
		strings.HasPrefix(r.UserAgent, "containerd/1.") ||
		r.UserAgent == buildertest.CRIUserAgent
}

// gets tallies the registry's GETs of the image's layers and config, split
// between the builders and the fleet.
type gets struct {
	builderLayers, fleetLayers map[string]int
	builderConfig              int
	builderManifests           int
}

func (f fixture) gets() gets {
	g := gets{builderLayers: map[string]int{}, fleetLayers: map[string]int{}}
	layers := map[string]bool{}
	for _, l := range f.img.Layers {
		layers[l.Digest.String()] = true
	}
	for _, r := range f.reg.Requests() {
		if r.Method != "GET" {
			continue
		}
		switch {
		case r.Kind == registrytest.KindBlob && layers[r.Ref] && fromBuilder(r):
			g.builderLayers[r.Ref]++
		case r.Kind == registrytest.KindBlob && layers[r.Ref]:
			g.fleetLayers[r.Ref]++
		case r.Kind == registrytest.KindBlob && r.Ref == f.img.Config.Digest.String() && fromBuilder(r):
			g.builderConfig++
		case r.Kind == registrytest.KindManifest && fromBuilder(r):
			g.builderManifests++
		}
	}
	return g
}

// startStevedore builds and starts `stevedore up --snapshots-socket`.
func startStevedore(t *testing.T) *buildertest.Stevedore {
	t.Helper()
	buildertest.RequireRoot(t)
	bin := buildertest.BuildStevedore(t)
	buildertest.RequireSnapshotsSocket(t, bin)
	return buildertest.StartStevedore(t, bin)
}

// TestBuildkitdOnStevedore is issue 11's BuildKit test: buildkitd's OCI
// worker on Stevedore's snapshots socket builds FROM + RUN (reading a file
// of the image) + COPY; buildkitd fetches the manifest and config but no
// layer, and the fleet fetches each layer once. A second buildkitd (fresh
// root, same socket) building the same Dockerfile makes nobody fetch a
// layer.
func TestBuildkitdOnStevedore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	st := startStevedore(t)
	dir := f.buildContext(t)

	for i, want := range []string{"first buildkitd", "second buildkitd, fresh root"} {
		bk := buildertest.StartBuildkitd(t, buildertest.WithProxySnapshotter(st.Socket), buildertest.WithPlainHTTPRegistry(f.reg.Host()))
		f.reg.Reset()
		ctx, cancel := context.WithTimeoutCause(t.Context(), buildTimeout, fmt.Errorf("the build took over %s", buildTimeout))
		out := t.TempDir()
		_, err := bk.Build(ctx, buildertest.Build{Context: dir, Output: out})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		f.checkOutput(t, out)
		g := f.gets()
		t.Logf("%s: buildkitd GETs: %d manifests, config %d times, layers %v; the fleet's layer GETs: %v", want, g.builderManifests, g.builderConfig, g.builderLayers, g.fleetLayers)
		if len(g.builderLayers) != 0 {
			t.Errorf("%s fetched layers itself: %v; want none (remote snapshots)", want, g.builderLayers)
		}
		if g.builderManifests == 0 || g.builderConfig == 0 {
			t.Errorf("%s fetched %d manifests and the config %d times; want both (it resolves the image)", want, g.builderManifests, g.builderConfig)
		}
		for _, l := range f.img.Layers {
			n := g.fleetLayers[l.Digest.String()]
			if i == 0 && n != 1 {
				t.Errorf("the fleet fetched layer %s %d times for the first build, want once", l.Digest, n)
			}
			if i == 1 && n != 0 {
				t.Errorf("the fleet fetched layer %s %d times for the second build, want none (the snapshot is on the node)", l.Digest, n)
			}
		}
	}
}

// TestContainerdOnStevedore is issue 11's containerd test: a CRI-style
// pull (containerd's client with snapshotters.AppendInfoHandlerWrapper) is
// answered with remote snapshots, so containerd fetches no layer; ctr run
// --snapshotter stevedore runs a container from it that prints a file of
// the image; and a plain ctr image pull of another image (no remote
// labels) unpacks through the snapshots API.
func TestContainerdOnStevedore(t *testing.T) {
	t.Parallel()
	buildertest.Tool(t, "runc")
	f := newFixture(t)
	st := startStevedore(t)
	ctrd := buildertest.StartContainerd(t, st.Socket)
	ctx, cancel := context.WithTimeoutCause(t.Context(), 2*buildTimeout, fmt.Errorf("the test took over %s", 2*buildTimeout))
	defer cancel()

	f.reg.Reset()
	if err := ctrd.PullCRI(ctx, f.img.Ref); err != nil {
		t.Fatal(err)
	}
	g := f.gets()
	t.Logf("CRI-style pull: its layer GETs %v; the fleet's %v", g.builderLayers, g.fleetLayers)
	if len(g.builderLayers) != 0 {
		t.Errorf("the CRI-style pull fetched layers itself: %v; want none (remote snapshots)", g.builderLayers)
	}
	for _, l := range f.img.Layers {
		if n := g.fleetLayers[l.Digest.String()]; n != 1 {
			t.Errorf("the fleet fetched layer %s %d times, want once", l.Digest, n)
		}
	}
	out, err := ctrd.Ctr(ctx, "run", "--rm", "--snapshotter", buildertest.ProxyPluginName, f.img.Ref, containerID(), "/bin/copy", "/etc/marker")
	if err != nil {
		t.Fatal(err)
	}
	if out != f.marker {
		t.Errorf("ctr run printed %q, want %q", out, f.marker)
	}

	// A plain pull: no CRI labels, so containerd fetches and unpacks every
	// layer through Prepare and Commit.
	other := buildertest.PushImage(t, f.reg, "test/plain", "v1",
		buildertest.Layer{"bin/copy": {Data: buildertest.CopyTool(t), Mode: 0o755}},
		buildertest.Layer{"etc/plain": {Data: []byte("plain pull\n")}},
	)
	if _, err := ctrd.Ctr(ctx, "image", "pull", "--plain-http", "--snapshotter", buildertest.ProxyPluginName, other.Ref); err != nil {
		t.Fatal(err)
	}
	out, err = ctrd.Ctr(ctx, "run", "--rm", "--snapshotter", buildertest.ProxyPluginName, other.Ref, containerID(), "/bin/copy", "/etc/plain")
	if err != nil {
		t.Fatal(err)
	}
	if out != "plain pull\n" {
		t.Errorf("ctr run of the plainly pulled image printed %q, want %q", out, "plain pull\n")
	}
}
