package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

var (
	when     = time.Date(2026, 11, 23, 8, 0, 0, 123456789, time.UTC)
	platform = &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	limit    = 2
	src      = events.SourceOp{
		Identifier: "docker-image://docker.io/library/alpine:3.20",
		Attrs:      map[string]string{"image.resolvemode": "pull", "image.layerlimit": "2"},
		Platform:   platform,
	}
	key0 = events.CacheKey{Index: 0, Key: "sha256:" + strings.Repeat("a", 64), Digest: digest.FromString("k0"), Pin: "sha256:" + strings.Repeat("b", 64)}
	opts = &events.CacheOpts{
		Ref:        "docker.io/library/alpine:3.20@sha256:" + strings.Repeat("b", 64),
		Top:        ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("top"), Size: 100},
		Manifest:   ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 50},
		Config:     ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("c"), Size: 20},
		RootFSType: "layers",
		Layers: []events.Layer{{
			Blob:   ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("l"), Size: 7, Annotations: map[string]string{"a": "b"}},
			DiffID: digest.FromString("d"),
		}},
		Platform:   *platform,
		LayerLimit: &limit,
		Cached: &events.CachedResult{
			Layers:    []events.Layer{{Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerZstd, Digest: digest.FromString("z"), Size: 5}, DiffID: digest.FromString("d")}},
			Locations: []events.BlobLocation{{Ref: "localhost:5000/cache:latest"}},
		},
	}
	started = when.Add(-time.Second)
)

// samples holds one fully populated payload of every catalog type.
var samples = []events.Payload{
	events.SourceResolveRequested{Source: src, Snapshot: true, Session: "s-1"},
	events.SourceResolveRequested{Source: src, SnapshotBy: "node-1"},
	events.SourceResolved{Source: src, Scheme: "docker-image", Handler: "puller", Snapshot: true, Session: "s-1"},
	events.SourceFailed{Source: src, Step: events.TypeCacheKeyRequested, Reason: "invalid layer limit 0", Code: "invalid", Attempts: 1},
	events.CacheKeyRequested{Source: src, Index: 1, Keys: []events.CacheKey{key0}, CacheOpts: opts, Snapshot: true, Session: "s-1"},
	events.CacheKeyComputed{Source: src, Key: key0, CacheOpts: opts},
	events.CacheHit{Source: src, Key: key0, Record: events.CacheRecord{
		Digests: []digest.Digest{key0.Digest}, ChainID: digest.FromString("chain"), Layers: opts.Layers,
		Node: "node-1", SnapshotKey: "sha256:chain", Size: 42, CreatedAt: when,
		Locations: []events.BlobLocation{{Layout: "/c"}, {Ref: "localhost:5000/a@sha256:" + strings.Repeat("b", 64)}},
	}, CacheOpts: opts, Snapshot: true},
	events.SnapshotRequested{Source: src, Keys: []events.CacheKey{key0}, CacheOpts: opts},
	events.SnapshotRequested{Source: src, Keys: []events.CacheKey{key0}, Content: &events.Content{File: &events.FileContent{
		Name: "hello.txt", Perm: 0o644, UID: 1, GID: 2, ModTime: &when, Digest: digest.FromString("f"), Size: 5,
		Locations: []events.BlobLocation{{Ref: "localhost:5000/a"}}, URL: "https://example.com/hello.txt",
		Headers: []events.Header{{Name: "Accept", Value: "text/plain"}},
		Auth:    &events.Auth{Session: "s-1", Secrets: []events.AuthSecret{{Name: "H", Form: events.AuthFormHeader, Required: true}}},
	}}},
	events.SnapshotRequested{Source: src, Keys: []events.CacheKey{key0}, Content: &events.Content{Git: &events.GitContent{
		Remote: "https://example.com/repo.git", Ref: "refs/tags/v1", Commit: strings.Repeat("e", 40), Subdir: "sub",
		KeepGitDir: true, SkipSubmodules: true, MTime: "commit",
		Auth: &events.Auth{Session: "s-1", Scope: "https://example.com/repo.git", Secrets: []events.AuthSecret{
			{Name: "GIT_AUTH_TOKEN.example.com", Form: events.AuthFormGitToken}, {Name: "GIT_AUTH_TOKEN", Form: events.AuthFormGitToken},
		}},
	}}},
	events.SnapshotReady{Source: src, Keys: []events.CacheKey{key0}, ChainID: "sha256:c", SnapshotKey: "sha256:c", Node: "n1",
		Size: 7, Layers: opts.Layers, Fetched: 1, Reused: 2, Followed: true},
	events.SnapshotFailed{Source: src, Step: events.TypeSnapshotRequested, Reason: "blob sha256:x: content does not match", Code: "invalid", Attempts: 1},
	events.CacheMiss{Source: src, Keys: []events.CacheKey{key0, {Index: 1, Key: "k1", Done: true}}, CacheOpts: opts},
	events.CacheMiss{Source: src, Keys: []events.CacheKey{key0}, Explanation: &events.MissExplanation{
		Source: "docker-image://docker.io/library/alpine",
		Nearest: &events.Sighting{Build: "b1", Identifier: src.Identifier, Tag: "docker.io/library/alpine:3.20", Pin: key0.Pin, Platform: "linux/amd64",
			Attrs: []events.Attr{{Name: "image.layerlimit", Value: "2"}}, Keys: []digest.Digest{key0.Digest}, DiffIDs: []digest.Digest{digest.FromString("d")}, SeenAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		Differences: []events.Difference{{Kind: events.DiffTagMoved, Name: "docker.io/library/alpine:3.20", Old: key0.Pin, New: "sha256:" + strings.Repeat("c", 64)}, {Kind: events.DiffPruned, Old: key0.Digest.String()}},
	}},
	events.Progress{Vertex: src.Identifier, ID: "resolve docker.io/library/alpine:3.20", Action: "done", Current: 1, Total: 2, Started: &started, Completed: &when, Error: "x"},
	events.CacheExportRequested{Target: "type=local,dest=/c", Build: "b-1", Keys: []digest.Digest{key0.Digest}},
	events.CacheExported{Target: "type=local,dest=/c", Manifest: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("cm"), Size: 9},
		Records: 2, Layers: 3, Written: 1, Existed: 1, Mounted: 1, Warning: "w"},
	events.CacheExportFailed{Step: events.TypeCacheExportRequested, Reason: "local cache exporter requires dest", Code: "invalid", Attempts: 1},
	events.CacheImportRequested{Source: "type=registry,ref=localhost:5000/c:latest"},
	events.CacheImported{Source: "type=registry,ref=localhost:5000/c:latest", Manifest: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("cm"), Size: 9},
		MediaType: ocispec.MediaTypeImageManifest, Records: []digest.Digest{digest.FromString("r")}, Dropped: 1, Warning: "w"},
	events.CacheImportFailed{Step: events.TypeCacheImportRequested, Reason: "invalid looping record", Code: "invalid", Attempts: 1},
	events.SourceChanged{Ref: "docker.io/library/alpine:3.20", Platform: "linux/amd64", Old: "sha256:" + strings.Repeat("b", 64), New: "sha256:" + strings.Repeat("c", 64), Prepull: true, PrepullBuild: "prepull-1"},
}

func sampleEvent(p events.Payload) events.Event {
	return events.Event{
		ID: "id-1", Source: "/stevedore/test/1", BuildID: "build-1", Time: when,
		CausationID: "cause-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Data: p,
	}
}

func TestSamplesCoverCatalog(t *testing.T) {
	t.Parallel()
	seen := map[events.Type]bool{}
	for _, p := range samples {
		seen[p.EventType()] = true
	}
	for _, s := range events.Catalog() {
		if !seen[s.Type] {
			t.Errorf("no round-trip sample for %s", s.Type)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range samples {
		for _, mode := range []struct {
			name   string
			encode func(events.Event) (events.Message, error)
		}{{"binary", events.Encode}, {"structured", events.EncodeStructured}} {
			t.Run(string(p.EventType())+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				in := sampleEvent(p)
				m, err := mode.encode(in)
				if err != nil {
					t.Fatalf("encode: %v", err)
				}
				if got := m.Header[events.HeaderMsgID]; len(got) != 1 || got[0] != in.ID {
					t.Errorf("Nats-Msg-Id = %v, want %q", got, in.ID)
				}
				if want := events.Subject(in.BuildID, in.Type()); m.Subject != want {
					t.Errorf("subject = %q, want %q", m.Subject, want)
				}
				out, err := events.Decode(m)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if diff := cmp.Diff(in, out); diff != "" {
					t.Errorf("round trip (-in +out):\n%s", diff)
				}
			})
		}
	}
}

func TestBinaryHeaders(t *testing.T) {
	t.Parallel()
	m, err := events.Encode(sampleEvent(events.SourceResolveRequested{Source: src}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          "id-1",
		"ce-type":        "dev.stevedore.source.resolve.requested.v1",
		"ce-subject":     "build-1",
		"ce-source":      "/stevedore/test/1",
		"ce-time":        "2026-11-23T08:00:00.123456789Z",
		"ce-causationid": "cause-1",
		"Content-Type":   "application/json",
	}
	for k, v := range want {
		if got := m.Header[k]; len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %v, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(string(m.Data), `{"source":{"identifier":"docker-image://`) {
		t.Errorf("binary body is not the bare payload: %s", m.Data)
	}
}

// The NATS binding draft's percent-encoding example, and its reverse.
func TestPercentEncoding(t *testing.T) {
	t.Parallel()
	e := sampleEvent(events.Progress{ID: "x"})
	e.CausationID = "Euro € 😀 \"100%\""
	m, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Header["ce-causationid"][0], "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22100%25%22"; got != want {
		t.Errorf("ce-causationid = %q, want %q", got, want)
	}
	out, err := events.Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if out.CausationID != e.CausationID {
		t.Errorf("decoded causationid %q, want %q", out.CausationID, e.CausationID)
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	good, err := events.Encode(sampleEvent(events.SourceResolveRequested{Source: src}))
	if err != nil {
		t.Fatal(err)
	}
	with := func(mut func(*events.Message)) events.Message {
		m := events.Message{Subject: good.Subject, Header: map[string][]string{}, Data: append([]byte(nil), good.Data...)}
		for k, v := range good.Header {
			m.Header[k] = append([]string(nil), v...)
		}
		mut(&m)
		return m
	}
	for name, tc := range map[string]struct {
		m    events.Message
		want error
	}{
		"no id":             {with(func(m *events.Message) { delete(m.Header, "ce-id") }), events.ErrInvalid},
		"no source":         {with(func(m *events.Message) { delete(m.Header, "ce-source") }), events.ErrInvalid},
		"specversion 0.3":   {with(func(m *events.Message) { m.Header["ce-specversion"] = []string{"0.3"} }), events.ErrInvalid},
		"unknown type":      {with(func(m *events.Message) { m.Header["ce-type"] = []string{"dev.stevedore.nope.v9"} }), events.ErrUnknownType},
		"bad build id":      {with(func(m *events.Message) { m.Header["ce-subject"] = []string{"a.b"}; m.Subject = "" }), events.ErrInvalid},
		"subject mismatch":  {with(func(m *events.Message) { m.Subject = "stevedore.build.other.source.resolve.requested" }), events.ErrInvalid},
		"payload not JSON":  {with(func(m *events.Message) { m.Data = []byte("{") }), events.ErrInvalid},
		"payload wrong":     {with(func(m *events.Message) { m.Data = []byte(`{"source":7}`) }), events.ErrInvalid},
		"bad time":          {with(func(m *events.Message) { m.Header["ce-time"] = []string{"yesterday"} }), events.ErrInvalid},
		"bad percent":       {with(func(m *events.Message) { m.Header["ce-id"] = []string{"a%zz"} }), events.ErrInvalid},
		"xml body":          {with(func(m *events.Message) { m.Header["Content-Type"] = []string{"application/xml"} }), events.ErrInvalid},
		"structured broken": {with(func(m *events.Message) { m.Header["Content-Type"] = []string{"application/cloudevents+json"} }), events.ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := events.Decode(tc.m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]events.Event{
		"no payload":   {ID: "1", Source: "/s", BuildID: "b", Time: when},
		"no id":        {Source: "/s", BuildID: "b", Time: when, Data: events.Progress{}},
		"bad build id": {ID: "1", Source: "/s", BuildID: "a b", Time: when, Data: events.Progress{}},
	} {
		if _, err := events.Encode(e); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: Encode error = %v, want ErrInvalid", name, err)
		}
	}
}

func TestDeriveID(t *testing.T) {
	t.Parallel()
	a := events.DeriveID("cause", events.TypeCacheHit, 0)
	if a != events.DeriveID("cause", events.TypeCacheHit, 0) {
		t.Fatal("DeriveID is not deterministic")
	}
	for _, other := range []string{
		events.DeriveID("cause2", events.TypeCacheHit, 0),
		events.DeriveID("cause", events.TypeCacheMiss, 0),
		events.DeriveID("cause", events.TypeCacheHit, 1),
	} {
		if other == a {
			t.Errorf("DeriveID collision: %s", a)
		}
	}
	in := sampleEvent(events.CacheKeyRequested{})
	out := events.Derive(in, events.New(events.CacheHit{}), 0, "/p", when)
	if out.BuildID != in.BuildID || out.CausationID != in.ID || out.TraceParent != in.TraceParent || out.ID != events.DeriveID(in.ID, events.TypeCacheHit, 0) {
		t.Errorf("Derive = %+v", out)
	}
}

func TestSplitSubject(t *testing.T) {
	t.Parallel()
	b, n, err := events.SplitSubject(events.Subject("b-1", events.TypeCacheKeyRequested))
	if err != nil || b != "b-1" || n != "cachekey.requested" {
		t.Fatalf("SplitSubject = %q %q %v", b, n, err)
	}
	for _, s := range []string{"other.build.b.x", "stevedore.build.b", "stevedore.build.b*.x"} {
		if _, _, err := events.SplitSubject(s); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("SplitSubject(%q) error = %v", s, err)
		}
	}
}

// FuzzDecode: arbitrary headers and bodies never panic, and whatever decodes
// re-encodes to an equal event.
func FuzzDecode(f *testing.F) {
	for _, p := range samples {
		m, err := events.Encode(sampleEvent(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Header["ce-type"][0], m.Header["ce-id"][0], m.Header["ce-subject"][0], m.Header["ce-time"][0], "application/json", m.Data)
		s, err := events.EncodeStructured(sampleEvent(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add("", "", "", "", "application/cloudevents+json", s.Data)
	}
	f.Fuzz(func(t *testing.T, typ, id, subject, ts, contentType string, body []byte) {
		m := events.Message{Header: map[string][]string{
			"ce-specversion": {"1.0"}, "ce-type": {typ}, "ce-id": {id}, "ce-subject": {subject},
			"ce-source": {"/fuzz"}, "ce-time": {ts}, "Content-Type": {contentType},
		}, Data: body}
		e, err := events.Decode(m)
		if err != nil {
			return
		}
		again, err := events.Encode(e)
		if err != nil {
			t.Fatalf("decoded event does not re-encode: %v", err)
		}
		e2, err := events.Decode(again)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if diff := cmp.Diff(e, e2); diff != "" {
			t.Fatalf("decode/encode/decode changed the event:\n%s", diff)
		}
	})
}
