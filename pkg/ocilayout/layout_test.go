package ocilayout

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCreate: Create makes the directory (parents included), oci-layout with
// BuildKit's exact bytes and blobs/, no index.json, and is idempotent.
func TestCreate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	l, err := Create(dir)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if l.Root() != dir {
		t.Errorf("Root() = %q, want %q", l.Root(), dir)
	}
	got, err := os.ReadFile(filepath.Join(dir, LayoutFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"imageLayoutVersion":"1.0.0"}`; string(got) != want {
		t.Errorf("oci-layout = %s, want %s", got, want)
	}
	if diff := cmp.Diff([]string{BlobsDir, LayoutFile}, dirEntries(t, dir)); diff != "" {
		t.Errorf("layout root (-want +got):\n%s", diff)
	}
	if _, err := Create(dir); err != nil {
		t.Errorf("second Create: %v", err)
	}
	if _, err := Open(dir); err != nil {
		t.Errorf("Open after Create: %v", err)
	}
}

// TestCreateKeepsValidLayoutFile: an existing valid oci-layout (here with
// other spacing and an extra field, which the spec allows) is not rewritten.
func TestCreateKeepsValidLayoutFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const existing = "{ \"imageLayoutVersion\": \"1.0.0\", \"x\": 1 }\n"
	writeFile(t, filepath.Join(dir, LayoutFile), existing)
	if _, err := Create(dir); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, LayoutFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != existing {
		t.Errorf("oci-layout was rewritten: %q", got)
	}
}

// TestCreateErrors: bad paths and bad existing oci-layout files fail with
// ErrInvalid and the bad file is left as it was.
func TestCreateErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		layout string // oci-layout content; "" for none
		file   bool   // make the path a regular file
		empty  bool   // pass ""
	}{
		{name: "other version", layout: `{"imageLayoutVersion":"2.0.0"}`},
		{name: "no version", layout: `{}`},
		{name: "malformed", layout: `{"imageLayoutVersion":`},
		{name: "not an object", layout: `"1.0.0"`},
		{name: "path is a file", file: true},
		{name: "empty path", empty: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			switch {
			case tc.empty:
				dir = ""
			case tc.file:
				dir = filepath.Join(dir, "f")
				writeFile(t, dir, "x")
			default:
				writeFile(t, filepath.Join(dir, LayoutFile), tc.layout)
			}
			_, err := Create(dir)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Create = %v, want ErrInvalid", err)
			}
			if tc.layout != "" {
				got, _ := os.ReadFile(filepath.Join(dir, LayoutFile))
				if string(got) != tc.layout {
					t.Errorf("oci-layout clobbered: %q", got)
				}
			}
		})
	}
}

// TestOpenErrors: Open classifies a missing directory or oci-layout as
// ErrNotFound and a bad one as ErrInvalid, and never creates anything.
func TestOpenErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string
		want  error
	}{
		{"missing dir", func(t *testing.T, dir string) string { return filepath.Join(dir, "nope") }, ErrNotFound},
		{"missing oci-layout", func(t *testing.T, dir string) string { return dir }, ErrNotFound},
		{"malformed", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, LayoutFile), "not json")
			return dir
		}, ErrInvalid},
		{"other version", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, LayoutFile), `{"imageLayoutVersion":"1.1.0"}`)
			return dir
		}, ErrInvalid},
		{"not a directory", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "f")
			writeFile(t, p, "x")
			return p
		}, ErrInvalid},
		{"empty path", func(t *testing.T, dir string) string { return "" }, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := tc.setup(t, dir)
			before := dirEntries(t, dir)
			if _, err := Open(p); !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if diff := cmp.Diff(before, dirEntries(t, dir)); diff != "" {
				t.Errorf("Open changed the directory (-before +after):\n%s", diff)
			}
		})
	}
}
