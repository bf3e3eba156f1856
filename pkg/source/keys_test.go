package source_test

import (
	"encoding/json"
	"os"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/cachefmt"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// The key algorithms against testdata/images/expected.json, whose values
// gen.py computed independently and whose buildkit-base entry holds the keys
// a real BuildKit computed.
func TestKeysAgainstFixtures(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../testdata/images/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Images map[string]struct {
			Digest    string `json:"digest"`
			Platforms map[string]struct {
				Manifest    string           `json:"manifest"`
				DiffIDs     []digest.Digest  `json:"diff_ids"`
				KeyPlatform ocispec.Platform `json:"key_platform"`
				Key0        string           `json:"key0"`
				Key1        string           `json:"key1"`
				Solver0     string           `json:"solver0"`
				Record0     string           `json:"record0"`
				Record1     string           `json:"record1"`
				Key0Limit1  string           `json:"key0_limit1"`
				Key1Limit1  string           `json:"key1_limit1"`
			} `json:"platforms"`
		} `json:"images"`
	}
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Images) < 5 {
		t.Fatalf("only %d fixture images", len(fx.Images))
	}
	one := 1
	for name, img := range fx.Images {
		for platform, p := range img.Platforms {
			if got := source.MainManifestKey(digest.Digest(img.Digest), p.KeyPlatform, nil).String(); got != p.Key0 {
				t.Errorf("%s %s: MainManifestKey = %s, want %s", name, platform, got, p.Key0)
			}
			if got := source.ConfigKey(p.DiffIDs).String(); got != p.Key1 {
				t.Errorf("%s %s: ConfigKey = %s, want %s", name, platform, got, p.Key1)
			}
			if p.Record0 != "" {
				solver0 := source.SolverDigest(p.Key0)
				if p.Solver0 != "" && solver0.String() != p.Solver0 {
					t.Errorf("%s %s: SolverDigest = %s, want %s", name, platform, solver0, p.Solver0)
				}
				if got := cachefmt.RecordDigest(solver0, 0).String(); got != p.Record0 {
					t.Errorf("%s %s: RecordDigest(key0) = %s, want %s", name, platform, got, p.Record0)
				}
			}
			if p.Record1 != "" && p.Key1 != "" {
				if got := cachefmt.RecordDigest(source.SolverDigest(p.Key1), 0).String(); got != p.Record1 {
					t.Errorf("%s %s: RecordDigest(key1) = %s, want %s", name, platform, got, p.Record1)
				}
			}
			if p.Key0Limit1 != "" {
				if got := source.MainManifestKey(digest.Digest(img.Digest), p.KeyPlatform, &one).String(); got != p.Key0Limit1 {
					t.Errorf("%s %s: MainManifestKey limit 1 = %s, want %s", name, platform, got, p.Key0Limit1)
				}
				if got := source.ConfigKey(p.DiffIDs[:1]).String(); got != p.Key1Limit1 {
					t.Errorf("%s %s: ConfigKey limit 1 = %s, want %s", name, platform, got, p.Key1Limit1)
				}
			}
		}
	}
}

func TestConfigKeyOfNothingIsEmpty(t *testing.T) {
	t.Parallel()
	if k := source.ConfigKey(nil); k != "" {
		t.Errorf("ConfigKey(nil) = %q", k)
	}
}
