package main

import (
	"os"
	"path/filepath"
	"testing"
)

// Local paths are made absolute, so a fleet in another directory writes
// and reads where the client means; everything else is sent as written.
func TestCacheAttrs(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want, err string
		parse               func(string) (string, error)
	}{
		{"relative dest", "type=local,dest=cache,tag=v1", "type=local,dest=" + filepath.Join(wd, "cache") + ",tag=v1", "", exportTarget},
		{"absolute dest", "type=local,dest=/tmp/cache", "type=local,dest=/tmp/cache", "", exportTarget},
		{"key case", "type=local,DEST=cache", "type=local,DEST=" + filepath.Join(wd, "cache"), "", exportTarget},
		{"quoted path", `type=local,"dest=a,b"`, `type=local,"dest=` + filepath.Join(wd, "a,b") + `"`, "", exportTarget},
		{"registry", "type=registry,ref=example.com/cache:1,mode=max", "type=registry,ref=example.com/cache:1,mode=max", "", exportTarget},
		{"relative src", "type=local,src=cache,digest=sha256:" + sixtyFour, "type=local,src=" + filepath.Join(wd, "cache") + ",digest=sha256:" + sixtyFour, "", importSource},
		{"unknown exporter", "type=gha", "", `unknown cache exporter: "gha": invalid cache`, exportTarget},
		{"no dest", "type=local", "", "local cache exporter requires dest: invalid cache", exportTarget},
		{"no src", "type=local,dest=x", "", "local cache importer requires src: invalid cache", importSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.parse(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("%q: error %v, want %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

const sixtyFour = "2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047"
