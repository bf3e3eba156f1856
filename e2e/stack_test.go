//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The stack's users (deploy/nats.conf) and the variables compose reads
// their passwords from.
var natsUsers = []string{"admin", "resolver", "puller", "snapshotter", "exporter", "client", "watcher"}

// registryUser is the demo registry's user; its password is generated per
// run.
const registryUser = "stevedore-e2e"

// registryHost is the registry as the services see it (compose service
// name and port): the host part of every reference the tests pull.
const registryHost = "registry:5000"

// stack is one compose project of deploy/compose.yaml (plus
// compose.scale.yaml), with secrets and host ports of its own.
type stack struct {
	t       *testing.T
	project string
	// compose is the compose command: ["docker", "compose"] or
	// ["docker-compose"].
	compose []string
	// v2 is set for the compose plugin, which knows --pull never.
	v2    bool
	files []string
	env   []string
	// Host ports on 127.0.0.1.
	natsPort, monitorPort, registryPort int
	// passwords by NATS user, and the registry's.
	passwords        map[string]string
	registryPassword string
	// dockerConfig is the directory of the config.json with the
	// registry's credentials.
	dockerConfig string
	// volumes are the volumes the project's containers mounted, recorded
	// before teardown to check they are gone after it.
	volumes map[string]bool
}

// newStack prepares a project: secrets, a docker config.json and an
// htpasswd file for the registry, free host ports. It starts nothing.
func newStack(t *testing.T) *stack {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		t:         t,
		project:   "stevedore-e2e-" + randomHex(4),
		files:     []string{filepath.Join(root, "deploy", "compose.yaml"), filepath.Join(root, "deploy", "compose.scale.yaml")},
		passwords: map[string]string{},
		volumes:   map[string]bool{},
	}
	s.compose, s.v2 = composeCommand(context.Background(), t)
	for _, u := range natsUsers {
		// nats.conf reads them as bare tokens: a letter first, then hex.
		s.passwords[u] = "p" + randomHex(12)
	}
	s.registryPassword = "r" + randomHex(12)
	s.natsPort, s.monitorPort, s.registryPort = freePort(t), freePort(t), freePort(t)

	dir := t.TempDir()
	dockerDir := filepath.Join(dir, "docker")
	s.dockerConfig = dockerDir
	auth := base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + s.registryPassword))
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{registryHost: map[string]string{"auth": auth}}})
	hash, err := bcrypt.GenerateFromPassword([]byte(s.registryPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	// The services run as an unprivileged user: the mounted directory and
	// file must be readable by anyone.
	for _, err := range []error{
		os.Chmod(dir, 0o755),
		os.MkdirAll(dockerDir, 0o755),
		os.Chmod(dockerDir, 0o755),
		os.WriteFile(filepath.Join(dockerDir, "config.json"), cfg, 0o644),
		os.WriteFile(htpasswd, []byte(registryUser+":"+string(hash)+"\n"), 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.env = append(os.Environ(),
		"STEVEDORE_NATS_PORT="+strconv.Itoa(s.natsPort),
		"STEVEDORE_NATS_MONITOR_PORT="+strconv.Itoa(s.monitorPort),
		"STEVEDORE_REGISTRY_PORT="+strconv.Itoa(s.registryPort),
		"STEVEDORE_DOCKER_CONFIG="+dockerDir,
		"STEVEDORE_REGISTRY_HTPASSWD="+htpasswd,
		"STEVEDORE_TAG="+envOr("STEVEDORE_E2E_TAG", "dev"),
		"COMPOSE_PROFILES=demo",
	)
	for _, u := range natsUsers {
		s.env = append(s.env, "STEVEDORE_"+strings.ToUpper(u)+"_PASSWORD="+s.passwords[u])
	}
	return s
}

// composeCommand is the compose tool: STEVEDORE_COMPOSE (set by make e2e),
// else the docker plugin, else docker-compose.
func composeCommand(ctx context.Context, t *testing.T) ([]string, bool) {
	t.Helper()
	cmd := strings.Fields(os.Getenv("STEVEDORE_COMPOSE"))
	if len(cmd) == 0 {
		cmd = []string{"docker", "compose"}
		if exec.CommandContext(ctx, "docker", "compose", "version").Run() != nil {
			cmd = []string{"docker-compose"}
		}
	}
	out, err := exec.CommandContext(ctx, cmd[0], append(cmd[1:], "version")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", strings.Join(cmd, " "), err, out)
	}
	// The plugin says "Docker Compose version v2.x"; docker-compose 1.x
	// says "docker-compose version 1.29.2".
	return cmd, !strings.HasPrefix(strings.TrimSpace(string(out)), "docker-compose version 1.")
}

// run runs a compose command on the project.
func (s *stack) run(ctx context.Context, args ...string) (string, error) {
	full := slices.Clone(s.compose[1:])
	full = append(full, "-p", s.project)
	for _, f := range s.files {
		full = append(full, "-f", f)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, s.compose[0], full...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", strings.Join(s.compose, " "), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// up starts (or rescales) the project and waits until every container is
// healthy.
func (s *stack) up(ctx context.Context, scale map[string]int) error {
	args := []string{"up", "-d", "--no-build", "--remove-orphans"}
	if s.v2 {
		args = append(args, "--pull", "never")
	}
	keys := make([]string, 0, len(scale))
	for k := range scale {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--scale", fmt.Sprintf("%s=%d", k, scale[k]))
	}
	if _, err := s.run(ctx, args...); err != nil {
		return err
	}
	return s.waitHealthy(ctx, 3*time.Minute)
}

// down removes the project's containers, networks and volumes (named and
// anonymous), then checks that none is left.
func (s *stack) down() error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), 3*time.Minute, errors.New("compose down took over 3 minutes"))
	defer cancel()
	s.recordVolumes(ctx)
	_, err := s.run(ctx, "down", "-v", "--remove-orphans", "-t", "5")
	var left []string
	if ids, lerr := s.containerIDs(ctx, ""); lerr == nil && len(ids) > 0 {
		left = append(left, fmt.Sprintf("containers %v", ids))
	}
	if out, lerr := docker(ctx, "network", "ls", "-q", "--filter", "label=com.docker.compose.project="+s.project); lerr == nil && strings.TrimSpace(out) != "" {
		left = append(left, "networks "+strings.Join(strings.Fields(out), " "))
	}
	if out, lerr := docker(ctx, "volume", "ls", "-q"); lerr == nil {
		for _, v := range strings.Fields(out) {
			if s.volumes[v] {
				left = append(left, "volume "+v)
			}
		}
	}
	if len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("left behind after down: %s", strings.Join(left, ", ")))
	}
	return err
}

// recordVolumes notes every volume the project's containers mount.
func (s *stack) recordVolumes(ctx context.Context) {
	ids, err := s.containerIDs(ctx, "")
	if err != nil || len(ids) == 0 {
		return
	}
	out, err := docker(ctx, append([]string{"inspect", "-f", "{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}"}, ids...)...)
	if err != nil {
		return
	}
	for _, v := range strings.Fields(out) {
		s.volumes[v] = true
	}
	if out, err := docker(ctx, "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+s.project); err == nil {
		for _, v := range strings.Fields(out) {
			s.volumes[v] = true
		}
	}
}

// containerIDs lists the project's containers of service (all when
// empty), running or not, by compose's labels, oldest first.
func (s *stack) containerIDs(ctx context.Context, service string) ([]string, error) {
	args := []string{"ps", "-a", "-q", "--no-trunc", "--filter", "label=com.docker.compose.project=" + s.project}
	if service != "" {
		args = append(args, "--filter", "label=com.docker.compose.service="+service)
	}
	out, err := docker(ctx, args...)
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	slices.Reverse(ids) // docker ps lists the newest first
	return ids, nil
}

// container is what the tests need to know of one container.
type container struct {
	ID      string
	Service string
	Name    string
	IP      string
	Running bool
	Health  string
}

// Short is the container's short id: its host name, so the node and
// instance name of a snapshotter and the start of a puller's.
func (c container) Short() string { return c.ID[:12] }

// containers inspects the project's containers of service (all when empty).
func (s *stack) containers(ctx context.Context, service string) ([]container, error) {
	ids, err := s.containerIDs(ctx, service)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	format := `{{.Id}}|{{index .Config.Labels "com.docker.compose.service"}}|{{.Name}}|{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}|{{.State.Running}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}`
	out, err := docker(ctx, append([]string{"inspect", "-f", format}, ids...)...)
	if err != nil {
		return nil, err
	}
	var cs []container
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 6 {
			return nil, fmt.Errorf("docker inspect: unexpected line %q", line)
		}
		cs = append(cs, container{ID: f[0], Service: f[1], Name: strings.TrimPrefix(f[2], "/"), IP: f[3], Running: f[4] == "true", Health: f[5]})
	}
	return cs, nil
}

// waitHealthy waits until every container of the project runs and reports
// healthy.
func (s *stack) waitHealthy(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		cs, err := s.containers(ctx, "")
		if err != nil {
			return err
		}
		var waiting []string
		for _, c := range cs {
			if !c.Running || c.Health != "healthy" {
				waiting = append(waiting, fmt.Sprintf("%s (running=%t health=%s)", c.Name, c.Running, c.Health))
			}
		}
		if len(cs) > 0 && len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %s: %s", limit, strings.Join(waiting, ", "))
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(time.Second):
		}
	}
}

// waitRunningHealthy waits until the given containers run and are healthy.
func (s *stack) waitRunningHealthy(ctx context.Context, ids []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		cs, err := s.containers(ctx, "")
		if err != nil {
			return err
		}
		ok := 0
		for _, c := range cs {
			if slices.Contains(ids, c.ID) && c.Running && c.Health == "healthy" {
				ok++
			}
		}
		if ok == len(ids) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d containers healthy after %s", ok, len(ids), limit)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// logs returns a container's whole log, stdout and stderr.
func (s *stack) logs(ctx context.Context, id string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", "logs", id)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker logs %s: %w", id, err)
	}
	return out.String(), nil
}

// serviceLogs is the concatenated log of every container of service.
func (s *stack) serviceLogs(ctx context.Context, service string) (string, error) {
	ids, err := s.containerIDs(ctx, service)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, id := range ids {
		l, err := s.logs(ctx, id)
		if err != nil {
			return "", err
		}
		b.WriteString(l)
	}
	return b.String(), nil
}

// natsURL is the NATS URL of user from the host.
func (s *stack) natsURL(user string) string {
	if user == "" {
		return fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort)
	}
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, s.passwords[user], s.natsPort)
}

// registryURL is the registry's base URL from the host.
func (s *stack) registryURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.registryPort) }

// secrets are every password of the run, which must never show in a log
// or an event, with the encodings they travel in.
func (s *stack) secrets() map[string]string {
	out := map[string]string{
		"registry password":             s.registryPassword,
		"registry basic auth":           base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + s.registryPassword)),
		"registry basic auth (no user)": base64.StdEncoding.EncodeToString([]byte(":" + s.registryPassword)),
	}
	for u, p := range s.passwords {
		out["nats password of "+u] = p
	}
	return out
}

// docker runs a docker command and returns its stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort is a TCP port on 127.0.0.1 that nothing listened on a moment
// ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
