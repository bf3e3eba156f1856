//go:build e2e

package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBuildNode runs a build node with compose: the stack with
// deploy/compose.builder.yaml (one snapshotter serving its snapshots socket
// on a host path) and its buildkitd (profile builder, image
// stevedore/buildkitd, FROM scratch). buildctl on the host builds FROM an
// image of the stack's registry + COPY on it: the build succeeds, the
// registry's access log shows the snapshotter fetched each layer once and
// buildkitd none (remote snapshots).
func TestBuildNode(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the e2e suite needs the docker CLI and a running engine (make e2e checks docker info first)")
	}
	buildctl, err := filepath.Abs(filepath.Join("..", "bin", "buildctl"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(buildctl); err != nil {
		t.Fatalf("no bin/buildctl (make e2e builds it with make builder-image): %v", err)
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), 8*time.Minute, errors.New("the build node test ran over 8 minutes"))
	defer cancel()

	s := newStack(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	s.files = []string{filepath.Join(root, "deploy", "compose.yaml"), filepath.Join(root, "deploy", "compose.builder.yaml")}
	// The node's directory: the snapshotter's data dir and socket, at the
	// same path in buildkitd's container. Short, for the socket's path.
	nodeDir, err := os.MkdirTemp("", "e2e-node-") //nolint:usetesting // t.TempDir is too long a path for a socket
	if err != nil {
		t.Fatal(err)
	}
	bkPort := freePort(t)
	s.env = append(s.env, "COMPOSE_PROFILES=demo,builder", "STEVEDORE_NODE_DIR="+nodeDir, "STEVEDORE_BUILDKITD_PORT="+strconv.Itoa(bkPort))
	t.Cleanup(func() {
		if t.Failed() {
			for _, svc := range []string{"snapshotter", "buildkitd"} {
				if l, err := s.serviceLogs(context.Background(), svc); err == nil {
					if len(l) > 6000 {
						l = l[len(l)-6000:]
					}
					t.Logf("%s logs:\n%s", svc, l)
				}
			}
		}
		if err := s.down(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		// The snapshotter (root) wrote its store here.
		_ = os.RemoveAll(nodeDir)
	})
	if err := s.up(ctx, nil); err != nil {
		t.Fatalf("compose up: %v", err)
	}

	img, err := generate(t.TempDir(), "e2e/builder", 11, shape{Layers: 3, FilesPerLayer: 4, FileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	p := &pusher{base: s.registryURL(), user: registryUser, password: s.registryPassword, client: &http.Client{Timeout: 5 * time.Minute}}
	if err := p.push(ctx, img); err != nil {
		t.Fatalf("push %s: %v", img.Ref(), err)
	}

	dir := t.TempDir()
	for name, data := range map[string]string{"Dockerfile": "FROM " + img.Ref() + "\nCOPY hello.txt /hello.txt\n", "hello.txt": "hello\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, buildctl, "--addr", "tcp://127.0.0.1:"+strconv.Itoa(bkPort), "build", "--progress", "plain",
		"--frontend", "dockerfile.v0", "--local", "context="+dir, "--local", "dockerfile="+dir)
	// The registry's credentials reach buildkitd through buildctl's
	// session, from the client's docker config.
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+s.dockerConfig)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildctl build: %v\n%s", err, out)
	}
	t.Logf("buildctl build FROM %s + COPY on the build node: %s", img.Ref(), time.Since(start).Round(10*time.Millisecond))

	ips := map[string]string{}
	for _, svc := range []string{"snapshotter", "buildkitd"} {
		cs, err := s.containers(ctx, svc)
		if err != nil || len(cs) != 1 {
			t.Fatalf("%s containers: %v %v", svc, cs, err)
		}
		ips[cs[0].IP] = svc
	}
	l, err := s.serviceLogs(ctx, "registry")
	if err != nil {
		t.Fatalf("registry logs: %v", err)
	}
	gets := map[string]map[string]int{"snapshotter": {}, "buildkitd": {}}
	for _, a := range parseAccessLog(l) {
		if a.Method != http.MethodGet || a.Status != http.StatusOK {
			continue
		}
		for _, layer := range img.Layers {
			if strings.HasSuffix(a.Path, "/blobs/"+layer.Digest.String()) {
				if who, ok := ips[a.IP]; ok {
					gets[who][layer.Digest.String()]++
				}
			}
		}
	}
	t.Logf("layer GETs: %v", gets)
	if len(gets["buildkitd"]) != 0 {
		t.Errorf("buildkitd fetched layers itself: %v; want none (remote snapshots)", gets["buildkitd"])
	}
	for _, layer := range img.Layers {
		if n := gets["snapshotter"][layer.Digest.String()]; n != 1 {
			t.Errorf("the snapshotter fetched layer %s %d times, want once", layer.Digest, n)
		}
	}
}
