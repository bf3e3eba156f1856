package puller_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/bus/bustest"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/fleettest"
)

// serveFixtures serves every fixture layout of testdata/images as a store
// named after its image, in a session of its own, and returns the
// session's id.
func serveFixtures(t *testing.T, s *fleettest.Stack, fx fleettest.Fixtures) string {
	t.Helper()
	stores := map[string]*ocilayout.Layout{}
	for name, img := range fx.Images {
		l, err := ocilayout.Open(filepath.Join(fleettest.ImagesDir, img.Path))
		if err != nil {
			t.Fatal(err)
		}
		stores[name] = l
	}
	return s.ServeSession(t, session.Config{Protocols: []session.Protocol{fleettest.Stores(t, stores)}})
}

func ociAttrs(sessionID, store string, more ...string) map[string]string {
	attrs := map[string]string{source.AttrOCILayoutSessionID: sessionID, source.AttrOCILayoutStoreID: store}
	for i := 0; i+1 < len(more); i += 2 {
		attrs[more[i]] = more[i+1]
	}
	return attrs
}

// Known answers through a client's layout: every fixture image, every
// platform, read over a session instead of a registry, gives exactly the
// keys its docker-image reference gives (gen.py's), with and without
// oci.layerlimit; the CacheOpts say where the blobs are (the session's
// store) instead of naming a registry.
func TestOCILayoutKnownAnswerKeys(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	id := serveFixtures(t, s, fx)
	for name, img := range fx.Images {
		if img.Reject != "" {
			continue
		}
		for platform := range img.Platforms {
			t.Run(name+"/"+platform, func(t *testing.T) {
				t.Parallel()
				ident := "oci-layout://stevedore.local/" + name + "@" + img.Digest
				m := fleettest.Miss(t, s.Resolve(t, ident, ociAttrs(id, name), platform))
				want := []string{img.Field(t, platform, "key0"), img.Field(t, platform, "index1_key")}
				if got := keysOf(m); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("keys = %v, want %v", got, want)
				}
				if m.Keys[0].Pin != img.Digest || !m.Keys[1].Done {
					t.Errorf("keys = %+v", m.Keys)
				}
				o := m.CacheOpts
				wantOrigin := &events.BlobLocation{Session: id, Store: name}
				if o == nil || o.Ref != "" || !cmp.Equal(o.Origin, wantOrigin) || o.Top.Digest.String() != img.Digest || o.Top.MediaType == "" {
					t.Errorf("cacheOpts = %+v, want origin %v, no ref", o, wantOrigin)
				}
				if _, ok := img.Platforms[platform]["key0_limit1"]; !ok {
					return
				}
				m = fleettest.Miss(t, s.Resolve(t, ident, ociAttrs(id, name, source.AttrOCILayoutLayerLimit, "1"), platform))
				want = []string{img.Field(t, platform, "key0_limit1"), img.Field(t, platform, "key1_limit1")}
				if got := keysOf(m); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("keys with oci.layerlimit=1 = %v, want %v", got, want)
				}
			})
		}
	}
}

// Bad oci-layout sources fail the build with BuildKit's messages, each
// permanent: no digest, a blob that is neither index nor manifest, a
// digest the layout does not hold, a layer limit past the layers, and a
// session nobody serves.
func TestOCILayoutBadInput(t *testing.T) {
	t.Parallel()
	fx := fleettest.LoadFixtures(t)
	s := fleettest.New(t)
	s.Puller(t)
	id := serveFixtures(t, s, fx)
	single := fx.Images["single"]
	config := single.Field(t, "linux/amd64", "config")
	layer := single.Strings(t, "linux/amd64", "layers")[0]
	absent := digest.FromString("absent").String()
	gone := fleettest.HoldKey(t)
	for _, tc := range []struct {
		name, ident string
		attrs       map[string]string
		reason      string
		code        string
	}{
		{"tag only", "oci-layout://stevedore.local/single:latest", ociAttrs(id, "single"),
			`reference "stevedore.local/single:latest" must have digest`, "invalid"},
		{"a config", "oci-layout://stevedore.local/single@" + config, ociAttrs(id, "single"),
			`reference "stevedore.local/single@` + config + `" contains neither an index nor a manifest`, "invalid"},
		{"a layer", "oci-layout://stevedore.local/single@" + layer, ociAttrs(id, "single"),
			`reference "stevedore.local/single@` + layer + `" contains neither an index nor a manifest`, "invalid"},
		{"schema 1", "oci-layout://stevedore.local/schema1@" + fx.Images["schema1"].Digest, ociAttrs(id, "schema1"),
			`reference "stevedore.local/schema1@` + fx.Images["schema1"].Digest + `" contains neither an index nor a manifest`, "invalid"},
		{"absent blob", "oci-layout://stevedore.local/single@" + absent, ociAttrs(id, "single"),
			"blob " + absent + ` not found in store "single" of session ` + id, "not-found"},
		{"unknown store", "oci-layout://stevedore.local/single@" + single.Digest, ociAttrs(id, "elsewhere"),
			"session " + id + ` has no store "elsewhere"`, "not-found"},
		{"layer limit", "oci-layout://stevedore.local/single@" + single.Digest, ociAttrs(id, "single", source.AttrOCILayoutLayerLimit, "4"),
			"layer limit 4 is greater than the number of layers in the image 3", "invalid"},
		{"session gone", "oci-layout://stevedore.local/single@" + single.Digest, ociAttrs(gone.ID, "single"),
			"no active session for " + gone.ID, "not-found"},
		// An id that is no session key cannot have signed the request.
		{"bad session id", "oci-layout://stevedore.local/single@" + single.Digest, ociAttrs("a.b", "single"),
			"the request names session a.b and is not signed by its key: only the client that holds a session may name it", "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fleettest.Failure(t, s.Resolve(t, tc.ident, tc.attrs, "linux/amd64"))
			if (tc.reason != "" && f.Reason != tc.reason) || f.Code != tc.code || f.Attempts != 1 {
				t.Errorf("failure = %q [%s, %d attempts], want %q [%s, 1 attempt]", f.Reason, f.Code, f.Attempts, tc.reason, tc.code)
			}
		})
	}
}

// oci-layout+blob: one key, BuildKit's blob key, computed without asking
// the session (none serves here); the snapshot it requests is one file
// read from the session's store, named, moded and owned by the attributes.
func TestOCILayoutBlobKey(t *testing.T) {
	t.Parallel()
	s := fleettest.New(t)
	s.Puller(t)
	blob := digest.FromString("a blob in a client's layout")
	client1 := fleettest.HoldKey(t).ID
	attrs := ociAttrs(client1, "tools", source.AttrHTTPFilename, "tool", source.AttrHTTPPerm, "0755", source.AttrHTTPUID, "1000")
	ident := "oci-layout+blob://stevedore.local/tools@" + blob.String()
	rec, _ := s.Request(t, ident, attrs, "", true)
	req := rec.Wait(t, 20*time.Second, events.TypeSnapshotRequested, events.TypeSourceFailed)
	got, ok := req.Data.(events.SnapshotRequested)
	if !ok {
		t.Fatalf("build ended with %v", bustest.Summary([]events.Event{req}))
	}
	key := digest.FromString(`{"Version":"v1","Digest":"` + blob.String() + `","Filename":"tool","Perm":493,"UID":1000,"GID":0}`)
	wantKey := events.CacheKey{Index: 0, Key: key.String(), Digest: source.SolverDigest(key.String()), Pin: blob.String(), Done: true}
	want := events.SnapshotRequested{
		Source: got.Source,
		Keys:   []events.CacheKey{wantKey},
		Content: &events.Content{File: &events.FileContent{
			Name: "tool", Perm: 0o755, UID: 1000, Digest: blob, Size: -1,
			Locations: []events.BlobLocation{{Session: client1, Store: "tools"}},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot.requested (-want +got):\n%s", diff)
	}
	m := fleettest.Miss(t, rec)
	if len(m.Keys) != 1 || m.Keys[0] != wantKey {
		t.Errorf("miss keys = %+v", m.Keys)
	}

	// Without a file name the file is the digest's hex, mode 0600; an
	// unnamed session is the build's own.
	unnamed := events.SourceOp{Identifier: "oci-layout+blob://stevedore.local/tools@" + blob.String(), Attrs: map[string]string{source.AttrOCILayoutStoreID: "tools"}}
	builds := fleettest.HoldKey(t).ID
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: unnamed, Snapshot: true, Session: builds})
	req = rec.Wait(t, 20*time.Second, events.TypeSnapshotRequested, events.TypeSourceFailed)
	got, ok = req.Data.(events.SnapshotRequested)
	if !ok {
		t.Fatalf("build ended with %v", bustest.Summary([]events.Event{req}))
	}
	f := got.Content.File
	if f.Name != blob.Encoded() || f.Perm != 0o600 || len(f.Locations) != 1 || f.Locations[0] != (events.BlobLocation{Session: builds, Store: "tools"}) {
		t.Errorf("file = %+v", f)
	}

	// Neither named nor the build's: BuildKit's text, at once.
	rec, _ = s.Submit(t, events.SourceResolveRequested{Source: unnamed, Snapshot: true})
	if failed := fleettest.Failure(t, rec); failed.Reason != "no active sessions" || failed.Code != "invalid" {
		t.Errorf("no session: %+v", failed)
	}
}
