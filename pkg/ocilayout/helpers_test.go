package ocilayout

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// newLayout creates a layout in a fresh temporary directory.
func newLayout(t *testing.T) *Layout {
	t.Helper()
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return l
}

// descOf is the descriptor of data with media type mt.
func descOf(mt string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

// manifestDesc is a descriptor of a (never written) manifest named by s.
func manifestDesc(s string) ocispec.Descriptor {
	return descOf(ocispec.MediaTypeImageManifest, []byte(s))
}

// writeFile writes a fixture file, failing the test on error.
func writeFile(t *testing.T, path string, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dirEntries lists the names in dir (nil when it does not exist).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// readIndexFile parses index.json from disk and checks that it round-trips:
// re-encoding the parsed index gives back exactly the bytes on disk.
func readIndexFile(t *testing.T, l *Layout) ocispec.Index {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(l.Root(), IndexFile))
	if err != nil {
		t.Fatalf("read index.json: %v", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("index.json is not valid JSON: %v\n%s", err, data)
	}
	again, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Fatalf("index.json does not round-trip:\n on disk %s\nre-encoded %s", data, again)
	}
	return idx
}
