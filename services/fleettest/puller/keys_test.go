package puller_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/services/fleettest"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// keysOf returns the key strings of a miss.
func keysOf(m events.CacheMiss) []string {
	out := make([]string, len(m.Keys))
	for i, k := range m.Keys {
		out[i] = k.Key
	}
	return out
}

// Known answers: every fixture image, every platform, with and without layer
// limits, resolved through the bus, gives the keys gen.py computed (and, for
// buildkit-base, the keys a real BuildKit computed).
func TestKnownAnswerKeys(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	for name, img := range fx.Images {
		if img.Reject != "" {
			continue
		}
		ref := s.Push(t, img.Path, "fixtures/"+name+":v1")
		for platform := range img.Platforms {
			t.Run(name+"/"+platform, func(t *testing.T) {
				t.Parallel()
				rec, _ := s.Request(t, "docker-image://"+ref, nil, platform, false)
				m := fleettest.Miss(t, rec)
				want := []string{img.Field(t, platform, "key0"), img.Field(t, platform, "index1_key")}
				if got := keysOf(m); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("keys = %v, want %v", got, want)
				}
				if m.Keys[0].Index != 0 || m.Keys[0].Done || m.Keys[1].Index != 1 || !m.Keys[1].Done {
					t.Errorf("index/done = %+v", m.Keys)
				}
				for i, solver := range []string{"solver0", "solver1"} {
					if _, ok := img.Platforms[platform][solver]; !ok && img.Oracle != "" {
						continue
					}
					if got := m.Keys[i].Digest.String(); got != img.Field(t, platform, solver) {
						t.Errorf("solver digest %d = %s, want %s", i, got, img.Field(t, platform, solver))
					}
				}
				for i, record := range []string{"record0", "record1"} {
					if got := cachefmt.RecordDigest(m.Keys[i].Digest, 0).String(); got != img.Field(t, platform, record) {
						t.Errorf("record digest %d = %s, want %s", i, got, img.Field(t, platform, record))
					}
				}
				if m.Keys[0].Pin != img.Digest || m.Keys[1].Pin != img.Digest {
					t.Errorf("pins = %s, %s, want %s", m.Keys[0].Pin, m.Keys[1].Pin, img.Digest)
				}
				if m.CacheOpts == nil || m.CacheOpts.Config.Digest.String() != img.Field(t, platform, "config") {
					t.Errorf("cacheOpts = %+v", m.CacheOpts)
				}
				if want := ref + "@" + img.Digest; m.CacheOpts.Ref != want {
					t.Errorf("cacheOpts.Ref = %q, want %q", m.CacheOpts.Ref, want)
				}
			})
			// Layer limits, as far as the fixture computed them.
			for limit := 1; ; limit++ {
				k0, ok := img.Platforms[platform][fmt.Sprintf("key0_limit%d", limit)].(string)
				if !ok {
					break
				}
				k1 := img.Field(t, platform, fmt.Sprintf("key1_limit%d", limit))
				t.Run(fmt.Sprintf("%s/%s/limit%d", name, platform, limit), func(t *testing.T) {
					t.Parallel()
					rec, _ := s.Request(t, "docker-image://"+ref, map[string]string{source.AttrImageLayerLimit: fmt.Sprint(limit)}, platform, false)
					m := fleettest.Miss(t, rec)
					if got, want := keysOf(m), []string{k0, k1}; fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("keys = %v, want %v", got, want)
					}
					if len(m.CacheOpts.Layers) != limit || *m.CacheOpts.LayerLimit != limit {
						t.Errorf("cacheOpts carries %d layers, limit %v", len(m.CacheOpts.Layers), m.CacheOpts.LayerLimit)
					}
				})
			}
		}
	}
}

// The same layers under another repository and tag, another compression, a
// Docker manifest or another config history give the same index-1 key and a
// different index-0 key. A digest reference to a platform manifest of an
// index gets that manifest's index-0 key.
func TestIndexOneKeyIgnoresPackaging(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	key1 := fx.Images["single"].Field(t, "linux/amd64", "key1")
	seen0 := map[string]string{}
	for _, c := range []struct{ image, repoTag string }{
		{"single", "a/single:1"},
		{"single", "b/elsewhere:other"},
		{"single-retag", "c/retag:2"},
		{"single-zstd", "d/zstd:3"},
		{"docker", "e/docker:4"},
	} {
		ref := s.Push(t, c.image, c.repoTag)
		rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
		m := fleettest.Miss(t, rec)
		if m.Keys[1].Key != key1 {
			t.Errorf("%s as %s: index-1 key %s, want %s", c.image, c.repoTag, m.Keys[1].Key, key1)
		}
		if other, dup := seen0[m.Keys[0].Key]; dup && other != c.image {
			t.Errorf("%s and %s share an index-0 key", other, c.image)
		}
		seen0[m.Keys[0].Key] = c.image
	}
	if len(seen0) != 4 {
		t.Errorf("%d distinct index-0 keys for 4 distinct manifests: %v", len(seen0), seen0)
	}

	multi := fx.Images["multi"]
	ref := s.Push(t, "multi", "f/multi:1")
	manifest := multi.Field(t, "linux/arm64", "manifest")
	rec, _ := s.Request(t, "docker-image://"+strings.Split(ref, ":1")[0]+"@"+manifest, nil, "linux/arm64", false)
	m := fleettest.Miss(t, rec)
	if m.Keys[0].Key != multi.Field(t, "linux/arm64", "key0_manifest") || m.Keys[1].Key != multi.Field(t, "linux/arm64", "key1") {
		t.Errorf("by manifest digest: keys %v", keysOf(m))
	}
}
