package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/session/secret"
)

// --secret reads buildctl's syntax and BuildKit's secretsprovider rules
// (cmd/buildctl/build/secret.go, session/secrets/secretsprovider).
func TestSecretFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-a-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, secret.MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STEVEDORE_TEST_VAR", "from-a-variable")
	t.Setenv("NAMED_LIKE_ITS_ID", "the variable of its name")
	t.Chdir(dir) // "id=token" with no source is the file ./token

	for _, tc := range []struct {
		spec, id, want string
	}{
		{"id=A,src=" + file, "A", "from-a-file"},
		{"id=A,source=" + file, "A", "from-a-file"},
		{"type=file,id=A,src=" + file, "A", "from-a-file"},
		{"id=A,env=STEVEDORE_TEST_VAR", "A", "from-a-variable"},
		{"type=env,id=A,src=STEVEDORE_TEST_VAR", "A", "from-a-variable"},
		{"ID=A,ENV=STEVEDORE_TEST_VAR", "A", "from-a-variable"},
		{"id=NAMED_LIKE_ITS_ID", "NAMED_LIKE_ITS_ID", "the variable of its name"},
		{"id=token", "token", "from-a-file"},
		{`"id=A","env=STEVEDORE_TEST_VAR"`, "A", "from-a-variable"},
	} {
		f := secretFlags{specs: []string{tc.spec}}
		got, err := f.parse()
		if err != nil || len(got) != 1 || string(got[tc.id]) != tc.want {
			t.Errorf("--secret %s: %q, %v; want %s=%q", tc.spec, got, err, tc.id, tc.want)
		}
	}

	f := secretFlags{specs: []string{"id=A,env=STEVEDORE_TEST_VAR", "id=A,src=" + file, "id=B,env=STEVEDORE_TEST_VAR"}}
	got, err := f.parse()
	if err != nil || string(got["A"]) != "from-a-file" || len(got) != 2 {
		t.Errorf("repeated ids: %q, %v; want the last A, and B", got, err)
	}
	if names := secretNames(got); strings.Join(names, ",") != "A,B" {
		t.Errorf("names %v", names)
	}

	for spec, want := range map[string]string{
		"src=" + file:                 "secret missing ID",
		"id=A,foo=bar":                "unexpected key 'foo' in 'foo=bar'",
		"id=A,src":                    "invalid field 'src' must be a key=value pair",
		"id=A,type=ssh":               `unsupported secret type "ssh"`,
		"id=A,src=" + dir + "/absent": "failed to stat " + dir + "/absent",
		"id=A,src=" + big:             "secret A too big",
		`id="A`:                       "failed to parse csv secret",
	} {
		f := secretFlags{specs: []string{spec}}
		if _, err := f.parse(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--secret %s: %v; want %q", spec, err, want)
		}
	}
	if got, err := (&secretFlags{}).parse(); got != nil || err != nil {
		t.Errorf("no --secret: %v, %v", got, err)
	}
}
