package conformance

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// What the real exporter service writes, BuildKit's importer accepts and
// its marshaller writes back byte for byte: images of every fixture kind
// (gzip, zstd, Docker media types, a platform of an index, a shared base)
// pulled, then exported together, in both manifest forms.
func TestExporterOutputMatchesBuildKit(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	s.Snapshotter(t)
	s.Exporter(t)
	var keys []digest.Digest
	for _, img := range []struct{ name, platform string }{
		{"single", "linux/amd64"}, {"single-retag", "linux/amd64"}, {"single-zstd", "linux/amd64"},
		{"docker", "linux/amd64"}, {"multi", "linux/arm64"}, {"buildkit-base", "linux/amd64"},
	} {
		ref := s.Push(t, img.name, "conf/"+img.name+":1")
		switch end := fleettest.PullEnd(t, s.Pull(t, "docker-image://"+ref, img.platform)).Data.(type) {
		case events.SnapshotReady:
			for _, k := range end.Keys {
				keys = append(keys, k.Digest)
			}
		case events.CacheHit: // the same layers as an earlier image: its index-1 key
			keys = append(keys, end.Key.Digest)
		default:
			t.Fatalf("pull of %s ended with %T", img.name, end)
		}
	}
	for _, form := range []string{"", ",image-manifest=false", ",oci-mediatypes=false"} {
		dir := filepath.Join(t.TempDir(), "cache")
		ctx, cancel := context.WithTimeoutCause(t.Context(), time.Minute, errors.New("export took over a minute"))
		out, err := client.ExportCache(ctx, s.Env.JS, "conformance", events.CacheExportRequested{Target: "type=local,dest=" + dir + form, Keys: keys}, nil)
		cancel()
		if err != nil {
			t.Fatalf("export%s: %v", form, err)
		}
		l, err := ocilayout.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		top, err := l.Resolve(t.Context(), "latest")
		if err != nil {
			t.Fatal(err)
		}
		if top.Digest != out.Exported.Manifest.Digest {
			t.Errorf("export%s: index.json names %s, cache.exported %s", form, top.Digest, out.Exported.Manifest.Digest)
		}
		data, err := l.ReadBlob(t.Context(), top, cachefmt.MaxBlobSize)
		if err != nil {
			t.Fatal(err)
		}
		m, err := cachefmt.ReadManifest(data)
		if err != nil {
			t.Fatal(err)
		}
		config, err := l.ReadBlob(t.Context(), m.Config, cachefmt.MaxBlobSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(config, m.Layers); err != nil {
			t.Fatalf("export%s: BuildKit refuses the config: %v", form, err)
		}
		back, err := Remarshal(t.Context(), config, m.Layers)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, config) {
			t.Errorf("export%s: BuildKit re-marshals the config as\n%s\nnot\n%s", form, back, config)
		}
		if want := len(keys) - countShared(keys); out.Exported.Records != want {
			t.Errorf("export%s: %d records, want one per distinct key (%d)", form, out.Exported.Records, want)
		}
	}
}

// countShared counts repeated keys (the same layers under two tags give
// the same index-1 key).
func countShared(keys []digest.Digest) int {
	seen := map[digest.Digest]bool{}
	n := 0
	for _, k := range keys {
		if seen[k] {
			n++
		}
		seen[k] = true
	}
	return n
}
