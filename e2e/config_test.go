package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// These run with every `make test` (no build tag, no Docker): they keep the
// deployment files in step with the code they deploy.

func readRepoFile(t *testing.T, path ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{".."}, path...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestComposePinsNATSOfGoMod checks that compose.yaml runs the nats-server
// version pkg/go.mod pins, the one the tests embed and `make stand-ins`
// builds.
func TestComposePinsNATSOfGoMod(t *testing.T) {
	t.Parallel()
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\S+)`).FindStringSubmatch(readRepoFile(t, "pkg", "go.mod"))
	if m == nil {
		t.Fatal("pkg/go.mod requires no github.com/nats-io/nats-server/v2")
	}
	want := "image: nats:" + m[1] + "-alpine"
	if compose := readRepoFile(t, "deploy", "compose.yaml"); !strings.Contains(compose, want) {
		t.Errorf("deploy/compose.yaml does not say %q", want)
	}
}

// TestNATSUsers checks that nats.conf defines the users compose gives
// passwords to, each from its own variable, and that each service connects
// as its own user.
func TestNATSUsers(t *testing.T) {
	t.Parallel()
	conf := readRepoFile(t, "deploy", "nats.conf")
	compose := readRepoFile(t, "deploy", "compose.yaml")
	for _, u := range []string{"admin", "resolver", "puller", "snapshotter", "exporter", "client", "watcher"} {
		v := "STEVEDORE_" + strings.ToUpper(u) + "_PASSWORD"
		if !strings.Contains(conf, "user: "+u+"\n      password: $"+v+"\n") {
			t.Errorf("nats.conf: no user %s with password $%s", u, v)
		}
		if !strings.Contains(compose, v+": ${"+v+":-") {
			t.Errorf("compose.yaml: the nats container does not get %s", v)
		}
	}
	for _, svc := range []string{"resolver", "puller", "snapshotter", "exporter"} {
		url := "STEVEDORE_NATS_URL: nats://" + svc + ":${STEVEDORE_" + strings.ToUpper(svc) + "_PASSWORD:-" + svc + "-dev}@nats:4222"
		if !strings.Contains(compose, url) {
			t.Errorf("compose.yaml: %s does not connect as its own user (%s)", svc, url)
		}
		if !strings.Contains(compose, `test: ["CMD", "/stevedore-`+svc+`", "-healthcheck"]`) {
			t.Errorf("compose.yaml: %s has no healthcheck running its -healthcheck", svc)
		}
	}
}
