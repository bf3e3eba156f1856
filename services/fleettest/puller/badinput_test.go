package puller_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/services/fleettest"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/registry/registrytest"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/puller"
)

// Bad input ends the build with source.failed carrying BuildKit's message
// (or a clear one), never a crash or a stuck consumer.
func TestBadInputFails(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t, func(c *puller.Config) { c.Registry = s.RegistryConfig; c.Registry.MaxManifestBytes = 64 << 10 })
	ref := s.Push(t, "single", "bad/single:1")
	s.Push(t, "schema1", "bad/schema1:1")
	s.Push(t, "multi", "bad/multi:1")
	big := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"pad":"` + strings.Repeat("x", 70<<10) + `"}}`)
	s.Registry.PushManifest(t, "bad/big", "1", "application/vnd.oci.image.manifest.v1+json", big)
	host := s.Registry.Host()
	wrong := "sha256:" + strings.Repeat("0", 64)

	t.Run("cases", func(t *testing.T) { badInputCases(t, s, fx, ref, host, wrong) })
	s.ConsumerIdle(t, events.ConsumerPuller)
}

func badInputCases(t *testing.T, s *fleettest.Stack, fx fleettest.Fixtures, ref, host, wrong string) {
	held := fleettest.HoldKey(t)
	for _, tc := range []struct {
		name, identifier string
		attrs            map[string]string
		platform         string
		reason, code     string
	}{
		{"no scheme", "alpine", nil, "", "failed to parse alpine: invalid", "invalid"},
		{"unknown scheme", "foo://bar", nil, "", "unknown scheme foo: not found", "invalid"},
		{"local without session", "local://context", nil, "", "could not access local files without session", "invalid"},
		{"local bad patterns", "local://context", map[string]string{source.AttrLocalSessionID: held.ID, source.AttrIncludePatterns: "a"}, "", "invalid character 'a' looking for beginning of value", "invalid"},
		{"no tag or digest", "docker-image://" + host + "/bad/single", nil, "", "object required", "invalid"},
		{"bad resolve mode", "docker-image://" + ref, map[string]string{source.AttrImageResolveMode: "sometimes"}, "", "invalid resolvemode: sometimes", "invalid"},
		{"zero layer limit", "docker-image://" + ref, map[string]string{source.AttrImageLayerLimit: "0"}, "", "invalid layer limit 0", "invalid"},
		{"bad checksum attr", "docker-image://" + ref, map[string]string{source.AttrImageChecksum: "nope"}, "", "invalid image checksum nope: invalid checksum digest format", "invalid"},
		{"checksum mismatch", "docker-image://" + ref, map[string]string{source.AttrImageChecksum: wrong}, "",
			fmt.Sprintf("image digest %s for %s does not match expected checksum %s", fx.Images["single"].Digest, ref, wrong), "invalid"},
		{"layer limit too large", "docker-image://" + ref, map[string]string{source.AttrImageLayerLimit: "4"}, "",
			"layer limit 4 is greater than the number of layers in the image 3", "invalid"},
		{"registry 404", "docker-image://" + host + "/bad/missing:1", nil, "", host + "/bad/missing:1: not found", "not-found"},
		{"schema1", "docker-image://" + host + "/bad/schema1:1", nil, "", "support Docker Image manifest version 2, schema 1 has been removed. More information at https://docs.docker.com/go/deprecated-image-specs/", "invalid"},
		{"no such platform", "docker-image://" + host + "/bad/multi:1", nil, "linux/s390x", "no manifest for platform linux/s390x", "not-found"},
		{"manifest over the cap", "docker-image://" + host + "/bad/big:1", nil, "", "more than the 65536-byte cap", "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec, _ := s.Request(t, tc.identifier, tc.attrs, tc.platform, false)
			f := fleettest.Failure(t, rec)
			if !strings.Contains(f.Reason, tc.reason) || f.Code != tc.code {
				t.Errorf("failed with %q (%s), want %q (%s)", f.Reason, f.Code, tc.reason, tc.code)
			}
			if f.Attempts != 1 {
				t.Errorf("permanent failure took %d attempts", f.Attempts)
			}
		})
	}
}

func TestRegistryFaults(t *testing.T) {
	t.Parallel()
	t.Run("5xx burst is retried", func(t *testing.T) {
		t.Parallel()
		s := fleettest.New(t)
		s.Puller(t)
		ref := s.Push(t, "single", "flaky/single:1")
		s.Registry.Fail(registrytest.FailRule{Method: "GET", Kind: registrytest.KindManifest, Status: 503, Times: 3})
		rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
		fleettest.Miss(t, rec)
		if got := s.Registry.Count("GET", registrytest.KindManifest); got != 4 {
			t.Errorf("%d manifest GETs, want 3 failed + 1", got)
		}
		s.ConsumerIdle(t, events.ConsumerPuller)
	})
	t.Run("persistent 5xx gives up", func(t *testing.T) {
		t.Parallel()
		s := fleettest.New(t)
		s.Puller(t)
		ref := s.Push(t, "single", "down/single:1")
		s.Registry.Fail(registrytest.FailRule{Kind: registrytest.KindManifest, Status: 502, Times: -1})
		rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
		f := fleettest.Failure(t, rec)
		if f.Code != "unavailable" || !strings.Contains(f.Reason, "giving up after 6 attempts") || f.Attempts != 6 {
			t.Errorf("failure = %+v", f)
		}
		s.ConsumerIdle(t, events.ConsumerPuller)
	})
	t.Run("401 without credentials", func(t *testing.T) {
		t.Parallel()
		s := fleettest.New(t, registrytest.RequireAuth("user", "secret"))
		s.Puller(t)
		ref := s.Push(t, "single", "private/single:1")
		rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
		f := fleettest.Failure(t, rec)
		if f.Code != "unauthorized" || f.Attempts != 1 {
			t.Errorf("failure = %+v", f)
		}
	})
	t.Run("credentials from config.json", func(t *testing.T) {
		t.Parallel()
		s := fleettest.New(t, registrytest.RequireAuth("user", "secret"))
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("user:secret"))
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, s.Registry.Host(), auth)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		s.Puller(t, func(c *puller.Config) { c.Registry.DockerConfigDir = dir })
		ref := s.Push(t, "single", "private/single:1")
		rec, _ := s.Request(t, "docker-image://"+ref, nil, "linux/amd64", false)
		fleettest.Miss(t, rec)
		for _, e := range rec.Events() {
			if strings.Contains(fmt.Sprint(e.Data), "secret") {
				t.Errorf("an event carries the password: %+v", e.Data)
			}
		}
	})
}

// Resolve modes: pull always asks the registry, default falls back to the
// fleet's last answer when the registry is down, local prefers that answer.
func TestResolveModes(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	ref := s.Push(t, "single", "modes/img:latest")
	fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))

	// The tag moves to another image.
	s.Push(t, "single-retag", "modes/img:latest")
	retag := fx.Images["single-retag"].Digest
	for _, mode := range []string{"default", "pull"} {
		m := fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageResolveMode: mode}, "linux/amd64"))
		if m.Keys[0].Pin != retag {
			t.Errorf("mode %s: pinned to %s, want the moved tag's %s", mode, m.Keys[0].Pin, retag)
		}
	}
	s.Registry.Reset()
	m := fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageResolveMode: "local"}, "linux/amd64"))
	if m.Keys[0].Pin != retag || len(s.Registry.Requests()) != 0 {
		t.Errorf("mode local: pin %s after %d registry requests, want %s from the fleet's memory", m.Keys[0].Pin, len(s.Registry.Requests()), retag)
	}

	// The registry goes down.
	s.Registry.Fail(registrytest.FailRule{Status: 503, Times: -1})
	m = fleettest.Miss(t, s.Resolve(t, "docker-image://"+ref, nil, "linux/amd64"))
	if m.Keys[0].Pin != retag {
		t.Errorf("mode default, registry down: pin %s", m.Keys[0].Pin)
	}
	f := fleettest.Failure(t, s.Resolve(t, "docker-image://"+ref, map[string]string{source.AttrImageResolveMode: "pull"}, "linux/amd64"))
	if f.Code != "unavailable" {
		t.Errorf("mode pull, registry down: %+v", f)
	}
}
