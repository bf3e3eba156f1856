package snapshotter_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/testenv"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// What the layers of the "single" fixture put in the root filesystem
// (testdata/images/gen.py).
var singleFiles = map[string]string{
	"etc/os-release":             "NAME=Stevedore fixture\nID=stevedore-fixture\nVERSION_ID=1\n",
	"app/releases/1/README":      "release 1 of the fixture app\n",
	"app/releases/1/config.json": "{\"greeting\":\"hello\",\"port\":8080}\n",
	"app/current/README":         "release 1 of the fixture app\n", // through the symlink
	"etc/motd":                   "NAME=Stevedore fixture\nID=stevedore-fixture\nVERSION_ID=1\n",
}

func TestPullSnapshotsRecordsAndHitsAfterwards(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	fx := fleettest.LoadFixtures(t)
	single := fx.Images["single"]
	s := fleettest.New(t)
	s.Puller(t)
	node, svc := s.Snapshotter(t)
	ref := s.Push(t, "single", "snap/single:1")
	s.Registry.Reset()

	rec := s.Pull(t, "docker-image://"+ref, "linux/amd64")
	ready := fleettest.Ready(t, rec)
	if ready.ChainID != single.Field(t, "linux/amd64", "key1") || ready.SnapshotKey != ready.ChainID {
		t.Errorf("chainID %s, want the index-1 key %s", ready.ChainID, single.Field(t, "linux/amd64", "key1"))
	}
	if ready.Node != node.Name || ready.Fetched != 3 || ready.Reused != 0 || len(ready.Layers) != 3 || ready.Size <= 0 || ready.Followed {
		t.Errorf("ready = %+v", ready)
	}
	if n := len(rec.OfType(events.TypeCacheMiss)); n != 1 {
		t.Errorf("%d cache.miss events", n)
	}
	// Progress with BuildKit's labels, every layer downloaded and extracted.
	labels := map[string]events.Progress{}
	for _, e := range rec.OfType(events.TypeProgress) {
		p := e.Data.(events.Progress)
		labels[p.ID] = p
	}
	for _, l := range single.Strings(t, "linux/amd64", "layers") {
		if p, ok := labels[l]; !ok || p.Action != "done" || p.Current != p.Total || p.Total == 0 {
			t.Errorf("download progress of %s = %+v", l, p)
		}
		if p, ok := labels["extracting "+l]; !ok || p.Completed == nil {
			t.Errorf("extract progress of %s = %+v", l, p)
		}
	}
	// The snapshot holds the image's files.
	out := t.TempDir()
	if err := svc.Store().Materialize(t.Context(), ready.Layers, out, nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range singleFiles {
		if got, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v", name, got, err)
		}
	}
	// Recorded under both keys.
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	for _, solver := range []string{"solver0", "solver1"} {
		r, found, err := idx.Get(t.Context(), digest.Digest(single.Field(t, "linux/amd64", solver)))
		if err != nil || !found || r.Node != node.Name || r.ChainID.String() != ready.ChainID || len(r.Layers) != 3 {
			t.Errorf("cache record under %s: %+v %v %v", solver, r, found, err)
		}
	}
	blobGets := s.Registry.Count("GET", registrytest.KindBlob)

	// Pulling again is a hit that fetches nothing; a retagged, recompressed
	// copy of the same layers hits at index 1.
	hit := fleettest.PullEnd(t, s.Pull(t, "docker-image://"+ref, "linux/amd64"))
	if h, ok := hit.Data.(events.CacheHit); !ok || h.Key.Index != 0 || h.Record.Node != node.Name {
		t.Errorf("second pull ended with %v", bustest.Summary([]events.Event{hit}))
	}
	retag := s.Push(t, "single-zstd", "snap/recompressed:2")
	hit = fleettest.PullEnd(t, s.Pull(t, "docker-image://"+retag, "linux/amd64"))
	if h, ok := hit.Data.(events.CacheHit); !ok || h.Key.Index != 1 {
		t.Errorf("recompressed copy ended with %v", bustest.Summary([]events.Event{hit}))
	}
	if got := s.Registry.Count("GET", registrytest.KindBlob); got != blobGets+1 { // the zstd copy's config
		t.Errorf("blob GETs went from %d to %d; hits must fetch nothing but a config", blobGets, got)
	}
	s.ConsumerIdle(t, "snapshotter")
}

// Two snapshotter replicas, twenty concurrent pulls of one image: every
// blob is fetched once for the whole fleet, and every pull ends ready on the
// node that made the snapshot.
func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	s := fleettest.New(t, registrytest.WithLatency(20*time.Millisecond))
	s.Puller(t)
	s.Puller(t)
	// Where each node keeps its snapshots, as a client is told it.
	where := map[string]string{}
	for range 2 {
		node, svc := s.Snapshotter(t)
		kind := string(svc.Store().Kind())
		where[node.Name] = kind + " in " + filepath.Join(svc.Store().Root(), "snapshots", kind)
	}
	ref := s.Push(t, "single", "many/pulls:1")
	s.Registry.Reset()

	const n = 20
	recs := make([]*bustest.Recorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i] = s.Pull(t, "docker-image://"+ref, "linux/amd64")
		}()
	}
	wg.Wait()
	// A pull whose keys are looked up after the snapshot was recorded is a
	// plain cache hit.
	nodes := map[string]int{}
	for _, rec := range recs {
		// A replica that followed another's snapshot says where the maker
		// keeps it, and so does every record, whoever wrote it last.
		switch p := fleettest.PullEnd(t, rec).Data.(type) {
		case events.SnapshotReady:
			nodes[p.Node]++
			if got := p.Snapshotter + " in " + p.SnapshotsDir; got != where[p.Node] {
				t.Errorf("snapshot.ready (followed %v) on %s says %q, want %q", p.Followed, p.Node, got, where[p.Node])
			}
		case events.CacheHit:
			nodes[p.Record.Node]++
			if got := p.Record.Snapshotter + " in " + p.Record.SnapshotsDir; got != where[p.Record.Node] {
				t.Errorf("cache record of %s says %q, want %q", p.Record.Node, got, where[p.Record.Node])
			}
		default:
			t.Fatalf("pull ended with %T %+v", p, p)
		}
	}
	if len(nodes) != 1 {
		t.Errorf("snapshots on several nodes: %v", nodes)
	}
	hit, ok := fleettest.PullEnd(t, s.Pull(t, "docker-image://"+ref, "linux/amd64")).Data.(events.CacheHit)
	if !ok {
		t.Fatal("pulling again is no cache hit")
	}
	if got := hit.Record.Snapshotter + " in " + hit.Record.SnapshotsDir; got != where[hit.Record.Node] {
		t.Errorf("the cache record of %s says %q, want %q", hit.Record.Node, got, where[hit.Record.Node])
	}
	perBlob := map[string]int{}
	for _, r := range s.Registry.Requests() {
		if r.Method == "GET" && r.Kind == registrytest.KindBlob {
			perBlob[r.Ref]++
		}
	}
	if len(perBlob) != 4 { // three layers and the config
		t.Errorf("blobs fetched: %v", perBlob)
	}
	for d, c := range perBlob {
		if c != 1 {
			t.Errorf("blob %s fetched %d times", d, c)
		}
	}
	t.Logf("registry requests for %d pulls: %v", n, s.Registry.Counts())
}

// A layer whose config names the wrong diffID, or whose manifest names the
// wrong size, fails the snapshot with a clear reason and commits nothing;
// a good image still pulls afterwards.
func TestBadLayersFailCleanly(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	good := buildImage(t, s, "bad/good:1", 64<<10, func(*ocispec.Manifest, *ocispec.Image) {})
	wrongDiff := buildImage(t, s, "bad/diffid:1", 64<<10, func(_ *ocispec.Manifest, c *ocispec.Image) {
		c.RootFS.DiffIDs[0] = digest.FromString("not this layer")
	})
	wrongSize := buildImage(t, s, "bad/size:1", 64<<10, func(m *ocispec.Manifest, _ *ocispec.Image) {
		m.Layers[0].Size--
	})
	for _, c := range []struct{ ref, reason string }{
		{wrongDiff, "not its diffID"},
		{wrongSize, "size"},
	} {
		f, ok := fleettest.PullEnd(t, s.Pull(t, "docker-image://"+c.ref, "linux/amd64")).Data.(events.SnapshotFailed)
		if !ok || f.Code != "invalid" || !strings.Contains(f.Reason, c.reason) || f.Attempts != 1 || f.Step != events.TypeSnapshotRequested {
			t.Errorf("%s: %+v", c.ref, f)
		}
	}
	snaps, err := svc.Store().Snapshots(t.Context())
	if err != nil || len(snaps) != 0 {
		t.Errorf("committed after failures: %v %v", snaps, err)
	}
	if r := fleettest.Ready(t, s.Pull(t, "docker-image://"+good, "linux/amd64")); r.Fetched != 1 {
		t.Errorf("good image after failures: %+v", r)
	}
	s.ConsumerIdle(t, "snapshotter")
}

func TestPruneRemovesWhatNoRecordReferences(t *testing.T) {
	t.Parallel()
	testenv.Root(t, "the snapshotter extracts image layers with their owners")
	s := fleettest.New(t)
	s.Puller(t)
	_, svc := s.Snapshotter(t)
	ref := s.Push(t, "single", "prune/me:1")
	fleettest.Ready(t, s.Pull(t, "docker-image://"+ref, "linux/amd64"))
	idx, err := cacheindex.Open(t.Context(), s.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	// Records younger than an hour are kept, and so is everything.
	if res, err := svc.Prune(t.Context(), idx, 1<<40); err != nil || res.Snapshots+res.Blobs != 0 {
		t.Fatalf("Prune keeping recent records = %+v, %v", res, err)
	}
	res, err := svc.Prune(t.Context(), idx, 0)
	if err != nil || res.Snapshots != 3 || res.Blobs != 3 {
		t.Fatalf("Prune of everything = %+v, %v", res, err)
	}
	if snaps, _ := svc.Store().Snapshots(t.Context()); len(snaps) != 0 {
		t.Errorf("left: %v", snaps)
	}
	if entries, _ := idx.List(t.Context()); len(entries) != 0 {
		t.Errorf("records left: %+v", entries)
	}
	// The next pull makes the snapshot again.
	if r := fleettest.Ready(t, s.Pull(t, "docker-image://"+ref, "linux/amd64")); r.Fetched != 3 || r.Followed {
		t.Errorf("pull after prune: %+v", r)
	}
}

// buildImage pushes a one-layer image whose layer holds a file of size
// random bytes, after mut had its way with the manifest and config.
func buildImage(t *testing.T, s *fleettest.Stack, repoTag string, size int, mut func(*ocispec.Manifest, *ocispec.Image)) string {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	payload := make([]byte, size)
	_, _ = rand.Read(payload)
	if err := tw.WriteHeader(&tar.Header{Name: "data.bin", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(payload)
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tb.Bytes())
	_ = zw.Close()
	repo, tag, _ := strings.Cut(repoTag, ":")
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: s.Registry.PushBlob(t, repo, gz.Bytes()), Size: int64(gz.Len())}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tb.Bytes())}}}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	mut(&m, &cfg)
	cdata, _ := json.Marshal(cfg)
	m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: s.Registry.PushBlob(t, repo, cdata), Size: int64(len(cdata))}
	mdata, _ := json.Marshal(m)
	s.Registry.PushManifest(t, repo, tag, ocispec.MediaTypeImageManifest, mdata)
	return fmt.Sprintf("%s/%s", s.Registry.Host(), repoTag)
}
