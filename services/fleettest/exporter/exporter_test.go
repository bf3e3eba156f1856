package exporter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/cacheindex"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// fleet is a stack with a puller, a snapshotter and an exporter.
type fleet struct {
	*fleettest.Stack
	snap fleettest.Replica
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	s := fleettest.New(t)
	s.Puller(t)
	snap, _ := s.Snapshotter(t)
	s.Exporter(t)
	return &fleet{Stack: s, snap: snap}
}

// pull pulls ref to its snapshot and returns the build id and the keys.
func (f *fleet) pull(t *testing.T, ref string) (string, events.SnapshotReady) {
	t.Helper()
	rec, id := f.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	return id, fleettest.Ready(t, rec)
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(t.Context(), 60*time.Second, errors.New("cache step took over a minute"))
	t.Cleanup(cancel)
	return ctx
}

func (f *fleet) export(t *testing.T, build string, req events.CacheExportRequested) (client.Outcome, error) {
	t.Helper()
	return client.ExportCache(ctxFor(t), f.Env.JS, build, req, nil)
}

// importCache imports source. A local source is served, as a client that
// wants its later pulls to read the cache would, in a session that lives
// as long as the test.
func (f *fleet) importCache(t *testing.T, source string) (client.Outcome, error) {
	t.Helper()
	req := events.CacheImportRequested{Source: source}
	if src, err := cachefmt.ParseImportSource(source); err == nil && src.Type == cachefmt.TypeLocal {
		if l, err := ocilayout.Open(src.Src); err == nil {
			key, err := session.NewKey()
			if err != nil {
				t.Fatal(err)
			}
			srv, err := session.Serve(t.Context(), f.Env.NC, key.ID, session.Config{Protocols: []session.Protocol{fleettest.Stores(t, map[string]*ocilayout.Layout{client.CacheStore: l})}, Key: key})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Stop() })
			req.Session, req.Store = key.ID, client.CacheStore
		}
	}
	return client.ImportCache(ctxFor(t), f.Env.JS, fmt.Sprintf("import-%d", time.Now().UnixNano()), req, nil)
}

// fresh makes the fleet forget everything and replaces the snapshotter
// with one on an empty data dir: another machine, as far as the cache is
// concerned.
func (f *fleet) fresh(t *testing.T) {
	t.Helper()
	f.snap.Stop()
	f.Forget(t)
	f.snap, _ = f.Snapshotter(t)
}

func blobGets(r *registrytest.Registry) int {
	n := 0
	for _, req := range r.Requests() {
		if req.Kind == registrytest.KindBlob && req.Method == "GET" {
			n++
		}
	}
	return n
}

func keyDigests(ready events.SnapshotReady) []digest.Digest {
	var out []digest.Digest
	for _, k := range ready.Keys {
		out = append(out, k.Digest)
	}
	return out
}

// Pull, export, forget everything, import, and the same image hits at
// index 0 and its pull reads the layers from the cache, not the origin;
// exporting the imported records again gives the same manifest.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, attrs string
		registry    bool
		form        cachefmt.Form
	}{
		{"local image manifest", "", false, cachefmt.FormImageManifest},
		{"local index", ",image-manifest=false", false, cachefmt.FormIndex},
		{"registry image manifest", "", true, cachefmt.FormImageManifest},
		{"registry docker index", ",oci-mediatypes=false", true, cachefmt.FormIndex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t)
			ref := f.Push(t, "single", "rt/app:1")
			build, ready := f.pull(t, ref)

			var target, source string
			var cacheReg *registrytest.Registry
			dir := filepath.Join(t.TempDir(), "cache")
			if tc.registry {
				cacheReg = registrytest.New(t)
				target = "type=registry,ref=" + cacheReg.Host() + "/cache/app:buildcache"
				source = target
			} else {
				target = "type=local,dest=" + dir
				source = "type=local,src=" + dir
			}
			out, err := f.export(t, build, events.CacheExportRequested{Target: target + tc.attrs, Build: build})
			if err != nil {
				t.Fatal(err)
			}
			exp := out.Exported
			if exp == nil || exp.Manifest.Digest == "" || exp.Records != 2 || exp.Layers != 3 || exp.Written != 3 {
				t.Fatalf("exported %+v", exp)
			}

			f.fresh(t)
			f.Registry.Reset()
			imported, err := f.importCache(t, source)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range ready.Keys {
				if !slices.Contains(imported.Imported.Records, cachefmt.RecordDigest(k.Digest, 0)) {
					t.Errorf("import did not record key %d (%s): %v", k.Index, k.Key, imported.Imported.Records)
				}
			}
			if want := map[cachefmt.Form]string{cachefmt.FormImageManifest: ocispec.MediaTypeImageManifest, cachefmt.FormIndex: cachefmt.MediaTypeDockerManifestList}[tc.form]; tc.registry && imported.Imported.MediaType != want {
				t.Errorf("imported media type %s, want %s", imported.Imported.MediaType, want)
			}
			if f.Registry.Count("", "") != 0 {
				t.Errorf("import asked the origin registry: %v", f.Registry.Counts())
			}

			// A resolve hits at index 0.
			hit := fleettest.Final(t, f.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
			h, ok := hit.Data.(events.CacheHit)
			if !ok || h.Key.Index != 0 || !h.Record.Lazy() {
				t.Fatalf("resolve after import ended with %+v", hit.Data)
			}
			if h.Record.Import != source {
				t.Errorf("the hit's record came from import %q, want %q", h.Record.Import, source)
			}
			// A pull snapshots from the cache, never from the origin.
			f.Registry.Reset()
			if cacheReg != nil {
				cacheReg.Reset()
			}
			_, again := f.pull(t, ref)
			if again.ChainID != ready.ChainID || again.Fetched != 3 {
				t.Errorf("pull after import: %+v", again)
			}
			if n := blobGets(f.Registry); n != 0 {
				t.Errorf("the pull fetched %d blobs from the origin", n)
			}
			if cacheReg != nil {
				if n := blobGets(cacheReg); n != 3 {
					t.Errorf("the pull fetched %d blobs from the cache registry, want 3", n)
				}
			}

			// Export → import → export is a fixed point.
			f.Forget(t)
			if _, err := f.importCache(t, source); err != nil {
				t.Fatal(err)
			}
			again2, err := f.export(t, build, events.CacheExportRequested{Target: target + tc.attrs, Keys: keyDigests(ready)})
			if err != nil {
				t.Fatal(err)
			}
			if again2.Exported.Manifest.Digest != exp.Manifest.Digest {
				t.Errorf("re-export of the imported records: manifest %s, first export %s", again2.Exported.Manifest.Digest, exp.Manifest.Digest)
			}
			if again2.Exported.Written != 0 || again2.Exported.Existed != 3 {
				t.Errorf("re-export wrote %d blobs (existed %d), want 0 and 3", again2.Exported.Written, again2.Exported.Existed)
			}
		})
	}
}

// Exporting the same records twice gives the same manifest digest, and a
// cache whose blobs are already at the target registry uploads none of
// them; a target on the origin registry mounts instead of uploading.
func TestExportSkipsAndMounts(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ref := f.Push(t, "single", "src/app:1")
	build, _ := f.pull(t, ref)
	target := "type=registry,ref=" + f.Registry.Host() + "/cache/app:1"

	f.Registry.Reset()
	first, err := f.export(t, build, events.CacheExportRequested{Target: target, Build: build})
	if err != nil {
		t.Fatal(err)
	}
	if e := first.Exported; e.Mounted != 3 || e.Written != 0 {
		t.Errorf("export to the origin registry: mounted %d, written %d; want 3 and 0", e.Mounted, e.Written)
	}
	// The only blob uploaded is the cache config.
	var puts []string
	for _, up := range f.Registry.Uploads() {
		if up.Method == "PUT" || up.Method == "POST" {
			puts = append(puts, up.Query)
		}
	}
	if len(puts) != 1 {
		t.Errorf("export to the origin registry finished %d uploads, want 1 (the config): %v", len(puts), puts)
	}
	if n := len(f.Registry.Mounts()); n != 3 {
		t.Errorf("%d mount requests, want 3", n)
	}

	f.Registry.Reset()
	second, err := f.export(t, build, events.CacheExportRequested{Target: target, Build: build})
	if err != nil {
		t.Fatal(err)
	}
	if second.Exported.Manifest.Digest != first.Exported.Manifest.Digest {
		t.Errorf("second export %s, first %s", second.Exported.Manifest.Digest, first.Exported.Manifest.Digest)
	}
	if e := second.Exported; e.Existed != 3 || e.Written+e.Mounted != 0 {
		t.Errorf("second export: existed %d, written %d, mounted %d", e.Existed, e.Written, e.Mounted)
	}
	if ups := f.Registry.Uploads(); len(ups) != 0 {
		t.Errorf("second export made %d blob uploads: %+v", len(ups), ups)
	}
}

// The cache a real BuildKit exported (testdata/caches/buildkit) imports;
// its roots are bare, so index 0 of its base image misses, but the prefix
// of the COPY record's chain is the base image's index-1 key, which hits,
// and the pull reads the base layers from the cache directory.
func TestImportBuildKitCache(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ref := f.Push(t, "buildkit-base", "fixture/base:1")
	dir := filepath.Join(fleettest.ImagesDir, "..", "caches", "buildkit")
	out, err := f.importCache(t, "type=local,src="+dir)
	if err != nil {
		t.Fatal(err)
	}
	const record1 = "sha256:da64c9c8bc2911ae5a07026acbc1bbd900592e450ab089ee290f1a12337c4fa9"
	if !slices.Contains(out.Imported.Records, record1) {
		t.Errorf("imported records %v lack the base image's index-1 record %s", out.Imported.Records, record1)
	}
	const copyRecord = "sha256:56d6fc1b795c9351a5db66c09f857fc999417b357545411693b454f0a5df3e58"
	if !slices.Contains(out.Imported.Records, copyRecord) {
		t.Errorf("imported records %v lack the COPY record", out.Imported.Records)
	}
	rec := f.Resolve(t, "docker-image://"+ref, nil, "linux/amd64")
	hit, ok := fleettest.Final(t, rec).Data.(events.CacheHit)
	if !ok || hit.Key.Index != 1 || hit.Key.Key != "sha256:238ba0a5abad95d0c6e0237483a042c17bd9ac943856c6278dec4cc8055e2fb9" {
		t.Fatalf("resolve of the base image after importing BuildKit's cache: %+v", hit)
	}
	t.Logf("BuildKit cache: index 0 (%s) missed (bare root), index 1 (%s) hit", rec.OfType(events.TypeCacheKeyComputed)[0].Data.(events.CacheKeyComputed).Key.Key, hit.Key.Key)
	f.Registry.Reset()
	_, ready := f.pull(t, ref)
	if ready.Fetched != 3 || blobGets(f.Registry) != 0 {
		t.Errorf("pull: fetched %d, %d blob GETs at the origin", ready.Fetched, blobGets(f.Registry))
	}
}

// A lazy hit whose cache lost a blob still pulls: that layer comes from
// the origin registry.
func TestLazyHitFallsBackToOrigin(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ref := f.Push(t, "single", "fb/app:1")
	build, ready := f.pull(t, ref)
	dir := filepath.Join(t.TempDir(), "cache")
	if _, err := f.export(t, build, events.CacheExportRequested{Target: "type=local,dest=" + dir, Build: build}); err != nil {
		t.Fatal(err)
	}
	f.fresh(t)
	if _, err := f.importCache(t, "type=local,src="+dir); err != nil {
		t.Fatal(err)
	}
	top := ready.Layers[len(ready.Layers)-1].Blob.Digest
	if err := os.Remove(filepath.Join(dir, "blobs", "sha256", top.Encoded())); err != nil {
		t.Fatal(err)
	}
	f.Registry.Reset()
	rec, _ := f.Request(t, "docker-image://"+ref, nil, "linux/amd64", true)
	again := fleettest.Ready(t, rec)
	if again.ChainID != ready.ChainID {
		t.Errorf("chainID %s, want %s", again.ChainID, ready.ChainID)
	}
	if n := blobGets(f.Registry); n < 1 {
		t.Errorf("the missing blob was not fetched from the origin (%d blob GETs)", n)
	}
	var fellBack bool
	for _, e := range rec.OfType(events.TypeProgress) {
		if p := e.Data.(events.Progress); p.Action == "fallback" && strings.Contains(p.Error, top.Encoded()) {
			fellBack = true
		}
	}
	if !fellBack {
		t.Error("no progress event says the cache was unusable")
	}
}

// Bad input fails with a clear reason (BuildKit's where it has one) and
// leaves nothing half-written at the target.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ref := f.Push(t, "single", "bad/app:1")
	build, _ := f.pull(t, ref)
	good := filepath.Join(t.TempDir(), "good")
	if _, err := f.export(t, build, events.CacheExportRequested{Target: "type=local,dest=" + good, Build: build}); err != nil {
		t.Fatal(err)
	}

	exportFails := []struct{ name, target, want string }{
		{"unknown type", "type=gha,scope=x", `unknown cache exporter: "gha"`},
		{"missing dest", "type=local", "local cache exporter requires dest"},
		{"missing ref", "type=registry", "registry cache exporter requires ref"},
		{"image manifest without OCI types", "type=local,dest=/x,oci-mediatypes=false,image-manifest=true", "OCI mediatypes are required"},
	}
	for _, tc := range exportFails {
		_, err := f.export(t, build, events.CacheExportRequested{Target: tc.target, Build: build})
		var be *client.BuildError
		if !errors.As(err, &be) || !strings.Contains(be.Failure.Reason, tc.want) || be.Failure.Code != "invalid" {
			t.Errorf("%s: export = %v, want an invalid failure with %q", tc.name, err, tc.want)
		}
	}
	// An unknown key is refused before anything is written.
	dest := filepath.Join(t.TempDir(), "never")
	_, err := f.export(t, build, events.CacheExportRequested{Target: "type=local,dest=" + dest, Keys: []digest.Digest{digest.FromString("nope")}})
	var be *client.BuildError
	if !errors.As(err, &be) || !strings.Contains(be.Failure.Reason, "is not in the cache index") {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed export left %s behind", dest)
	}
	// ignore-error makes it a warning.
	out, err := f.export(t, build, events.CacheExportRequested{Target: "type=local,ignore-error=true,dest=" + dest, Keys: []digest.Digest{digest.FromString("nope")}})
	if err != nil || out.Exported == nil || !strings.Contains(out.Exported.Warning, "is not in the cache index") {
		t.Errorf("ignore-error: %+v %v", out.Exported, err)
	}

	// Imports of broken caches, each a copy of the good one with one fault.
	corrupt := func(t *testing.T, name string, mutate func(t *testing.T, l *ocilayout.Layout, m ocispec.Manifest, top ocispec.Descriptor)) string {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.CopyFS(dir, os.DirFS(good)); err != nil {
			t.Fatal(err)
		}
		l, err := ocilayout.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		top, err := l.Resolve(t.Context(), "latest")
		if err != nil {
			t.Fatal(err)
		}
		data, err := l.ReadBlob(t.Context(), top, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		m, err := cachefmt.ReadManifest(data)
		if err != nil {
			t.Fatal(err)
		}
		mutate(t, l, ocispec.Manifest{Config: m.Config, Layers: m.Layers}, top)
		return dir
	}
	retag := func(t *testing.T, l *ocilayout.Layout, m ocispec.Manifest, cfg []byte) {
		cd := ocispec.Descriptor{MediaType: cachefmt.MediaTypeConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
		if _, err := l.WriteBlobBytes(t.Context(), cd, cfg); err != nil {
			t.Fatal(err)
		}
		data, md, err := cachefmt.BuildManifest(cachefmt.FormImageManifest, true, m.Layers, cd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.WriteBlobBytes(t.Context(), md, data); err != nil {
			t.Fatal(err)
		}
		if err := l.Tag(t.Context(), md, "latest"); err != nil {
			t.Fatal(err)
		}
	}
	importFails := []struct {
		name   string
		source func(t *testing.T) string
		want   string
	}{
		{"looping record", func(t *testing.T) string {
			return corrupt(t, "loop", func(t *testing.T, l *ocilayout.Layout, m ocispec.Manifest, _ ocispec.Descriptor) {
				retag(t, l, m, []byte(`{"records":[{"digest":"`+digest.FromString("r").String()+`","inputs":[[{"link":0}]]}]}`))
			})
		}, "invalid looping record"},
		{"corrupt config", func(t *testing.T) string {
			return corrupt(t, "json", func(t *testing.T, l *ocilayout.Layout, m ocispec.Manifest, _ ocispec.Descriptor) {
				retag(t, l, m, []byte(`{"records":[`))
			})
		}, "cache config"},
		{"missing blob", func(t *testing.T) string {
			return corrupt(t, "missing", func(t *testing.T, l *ocilayout.Layout, m ocispec.Manifest, _ ocispec.Descriptor) {
				if err := os.Remove(filepath.Join(l.Root(), "blobs", "sha256", m.Layers[0].Digest.Encoded())); err != nil {
					t.Fatal(err)
				}
			})
		}, "which session"},
		{"unknown type", func(*testing.T) string { return "type=s3,bucket=b" }, `unknown cache importer: "s3"`},
		{"missing src", func(*testing.T) string { return "type=local" }, "local cache importer requires src"},
	}
	for _, tc := range importFails {
		src := tc.source(t)
		if !strings.HasPrefix(src, "type=") {
			src = "type=local,src=" + src
		}
		_, err := f.importCache(t, src)
		var be *client.BuildError
		if !errors.As(err, &be) || !strings.Contains(be.Failure.Reason, tc.want) {
			t.Errorf("%s: import = %v, want a failure with %q", tc.name, err, tc.want)
		}
	}
	// A failed import put nothing into the index.
	idx, err := cacheindex.Open(t.Context(), f.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := idx.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Record.Lazy() {
			t.Errorf("a failed import left a lazy record %s", e.Digest)
		}
	}
	// A missing local cache is a warning, as in BuildKit.
	out, err = f.importCache(t, "type=local,src="+filepath.Join(t.TempDir(), "absent"))
	if err != nil || out.Imported == nil || out.Imported.Warning == "" || len(out.Imported.Records) != 0 {
		t.Errorf("missing local cache: %+v %v", out.Imported, err)
	}
	f.ConsumerIdle(t, "exporter")
}

// A cache BuildKit could not import (a config over 1 MiB) is refused at
// export time.
func TestExportRefusesTooLargeCache(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	idx, err := cacheindex.Open(t.Context(), f.Env.JS)
	if err != nil {
		t.Fatal(err)
	}
	var keys []digest.Digest
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6000 {
		d := digest.FromString(fmt.Sprint("key", i))
		l := events.Layer{Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(fmt.Sprint("blob", i)), Size: 10}, DiffID: digest.FromString(fmt.Sprint("diff", i))}
		if err := idx.Put(t.Context(), events.CacheRecord{Digests: []digest.Digest{d}, Layers: []events.Layer{l}, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, d)
	}
	dest := filepath.Join(t.TempDir(), "big")
	_, err = f.export(t, "big", events.CacheExportRequested{Target: "type=local,dest=" + dest, Keys: keys})
	var be *client.BuildError
	if !errors.As(err, &be) || !strings.Contains(be.Failure.Reason, "> 1048576") {
		t.Fatalf("export of a >1 MiB config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dest, "index.json")); !errors.Is(err, os.ErrNotExist) {
		t.Error("the refused export wrote index.json")
	}
}
