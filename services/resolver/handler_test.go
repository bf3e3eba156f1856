package resolver_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/google/go-cmp/cmp"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/session"
	"github.com/stevedore-dev/stevedore/pkg/source"
	"github.com/stevedore-dev/stevedore/services/resolver"
)

var (
	linuxAMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	linuxARMv7 = ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	digestA    = "sha256:" + strings.Repeat("a", 64)
)

// wantResolved is the two events a request that resolves produces.
func wantResolved(canonical events.SourceOp) []events.Event {
	return []events.Event{
		events.New(events.SourceResolved{Source: canonical, Scheme: source.SchemeDockerImage, Handler: events.ComponentPuller}),
		events.New(events.CacheKeyRequested{Source: canonical, Index: 0}),
	}
}

func TestResolveDockerImage(t *testing.T) {
	t.Parallel()
	attrs := map[string]string{
		source.AttrImageResolveMode: "pull",
		source.AttrImageLayerLimit:  "2",
		source.AttrImageRecordType:  "internal",
		source.AttrImageChecksum:    digestA,
		"image.unknown":             "kept as given",
	}
	for _, tc := range []struct {
		name string
		// handler is the handler's default platform.
		handler ocispec.Platform
		in      events.SourceOp
		want    events.SourceOp
	}{
		{
			name:    "tag",
			handler: linuxAMD64,
			in:      events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20"},
			want:    events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Platform: &linuxAMD64},
		},
		{
			name:    "digest",
			handler: linuxAMD64,
			in:      events.SourceOp{Identifier: "docker-image://docker.io/library/alpine@" + digestA},
			want:    events.SourceOp{Identifier: "docker-image://docker.io/library/alpine@" + digestA, Platform: &linuxAMD64},
		},
		{
			name:    "tag and digest",
			handler: linuxAMD64,
			in:      events.SourceOp{Identifier: "docker-image://registry.example.com:5000/team/app:1.2@" + digestA},
			want:    events.SourceOp{Identifier: "docker-image://registry.example.com:5000/team/app:1.2@" + digestA, Platform: &linuxAMD64},
		},
		{
			name:    "attrs carried unchanged",
			handler: linuxAMD64,
			in:      events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Attrs: attrs},
			want:    events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Attrs: attrs, Platform: &linuxAMD64},
		},
		{
			name:    "identifier printed canonically",
			handler: linuxAMD64,
			in:      events.SourceOp{Identifier: "docker-image://docker.io/library//alpine:3.20"},
			want:    events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Platform: &linuxAMD64},
		},
		{
			name:    "request platform kept",
			handler: linuxAMD64,
			in:      events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Platform: &linuxARMv7},
			want:    events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Platform: &linuxARMv7},
		},
		{
			name:    "default platform normalised",
			handler: ocispec.Platform{OS: "linux", Architecture: "aarch64", Variant: "v8"},
			in:      events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20"},
			want: events.SourceOp{
				Identifier: "docker-image://docker.io/library/alpine:3.20",
				Platform:   &ocispec.Platform{OS: "linux", Architecture: "arm64"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolver.NewHandler(tc.handler).Resolve(t.Context(), events.SourceResolveRequested{Source: tc.in})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if diff := cmp.Diff(wantResolved(tc.want), got); diff != "" {
				t.Errorf("Resolve outputs (-want +got):\n%s", diff)
			}
			// The canonical identifier is the one source.Parse prints.
			id, err := source.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tc.want.Identifier {
				t.Errorf("source.Parse prints %q, test expects %q", id.String(), tc.want.Identifier)
			}
		})
	}
}

// The platform filled in is the handler's own copy: a later change to the
// value passed to NewHandler, or to one output, does not leak into others.
func TestResolveDefaultPlatformIsACopy(t *testing.T) {
	t.Parallel()
	p := linuxAMD64
	h := resolver.NewHandler(p)
	p.Architecture = "riscv64"
	req := events.SourceResolveRequested{Source: events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20"}}
	first, err := h.Resolve(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	first[0].Data.(events.SourceResolved).Source.Platform.Architecture = "s390x"
	second, err := h.Resolve(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := events.SourceOp{Identifier: "docker-image://docker.io/library/alpine:3.20", Platform: &linuxAMD64}
	if diff := cmp.Diff(wantResolved(want), second); diff != "" {
		t.Errorf("second Resolve (-want +got):\n%s", diff)
	}
}

func TestResolveBadInput(t *testing.T) {
	t.Parallel()
	const image = "docker-image://docker.io/library/alpine:3.20"
	for _, tc := range []struct {
		name string
		in   events.SourceOp
		want string
		// is is the package source sentinel the error must still match.
		is error
	}{
		{"no scheme", events.SourceOp{Identifier: "alpine"}, "failed to parse alpine: invalid", source.ErrInvalid},
		{"unknown scheme", events.SourceOp{Identifier: "foo://bar"}, "unknown scheme foo: not found", source.ErrNotFound},
		{"empty", events.SourceOp{}, "failed to parse : invalid", source.ErrInvalid},
		{"no tag or digest", events.SourceOp{Identifier: "docker-image://docker.io/library/alpine"}, "object required", source.ErrInvalid},

		{"zero layer limit", events.SourceOp{Identifier: image, Attrs: map[string]string{source.AttrImageLayerLimit: "0"}}, "invalid layer limit 0", source.ErrInvalid},
		{"bad resolve mode", events.SourceOp{Identifier: image, Attrs: map[string]string{source.AttrImageResolveMode: "x"}}, "invalid resolvemode: x", source.ErrInvalid},
		{"bad record type", events.SourceOp{Identifier: image, Attrs: map[string]string{source.AttrImageRecordType: "x"}}, "invalid record type x", source.ErrInvalid},
		// Parsing comes before the handler lookup: a git identifier that
		// does not parse fails with the parser's message, not "no handler".
		{"git ref starting with -", events.SourceOp{Identifier: "git://github.com/moby/buildkit#-x"}, `invalid git ref "-x"`, source.ErrInvalid},
		{"oci-layout+blob without store", events.SourceOp{Identifier: "oci-layout+blob://store/app@" + digestA}, "oci-layout blob source requires store id", source.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := resolver.NewHandler(linuxAMD64).Resolve(t.Context(), events.SourceResolveRequested{Source: tc.in})
			if err == nil {
				t.Fatalf("Resolve(%q) = %v, want error %q", tc.in.Identifier, out, tc.want)
			}
			if out != nil {
				t.Errorf("Resolve returned outputs with its error: %v", out)
			}
			if err.Error() != tc.want {
				t.Errorf("error = %q, want %q", err.Error(), tc.want)
			}
			if !failure.Permanent(err) {
				t.Errorf("failure.Permanent(%v) = false, want true", err)
			}
			if got := failure.Code(err); got != "invalid" {
				t.Errorf("failure.Code(%v) = %q, want invalid", err, got)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

// docker-image+blob, http, https, oci-layout and oci-layout+blob go to
// the puller with their identifiers and attributes as given (an
// oci-layout reference without a digest fails there, at resolve time, as
// in BuildKit).
func TestResolveFileSources(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		scheme string
		in     events.SourceOp
	}{
		{source.SchemeDockerImageBlob, events.SourceOp{
			Identifier: "docker-image+blob://registry.example.com/team/tools@" + digestA,
			Attrs:      map[string]string{source.AttrHTTPFilename: "tool", source.AttrHTTPPerm: "0755"},
		}},
		{source.SchemeHTTP, events.SourceOp{Identifier: "http://example.com/file.tar.gz"}},
		{source.SchemeOCILayout, events.SourceOp{
			Identifier: "oci-layout://store/app@" + digestA,
			Attrs:      map[string]string{source.AttrOCILayoutStoreID: "store", source.AttrOCILayoutLayerLimit: "1"},
		}},
		{source.SchemeOCILayoutBlob, events.SourceOp{
			Identifier: "oci-layout+blob://store/app@" + digestA,
			Attrs:      map[string]string{source.AttrOCILayoutStoreID: "store", source.AttrHTTPFilename: "f"},
		}},
		{source.SchemeHTTPS, events.SourceOp{
			Identifier: "https://example.com/dl/file.tar.gz?v=1",
			Attrs:      map[string]string{source.AttrHTTPChecksum: digestA, "http.header.accept": "application/octet-stream"},
		}},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			t.Parallel()
			got, err := resolver.NewHandler(linuxAMD64).Resolve(t.Context(), events.SourceResolveRequested{Source: tc.in, Snapshot: true})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			want := tc.in
			want.Platform = &linuxAMD64
			wantOut := []events.Event{
				events.New(events.SourceResolved{Source: want, Scheme: tc.scheme, Handler: events.ComponentPuller, Snapshot: true}),
				events.New(events.CacheKeyRequested{Source: want, Index: 0, Snapshot: true}),
			}
			if diff := cmp.Diff(wantOut, got); diff != "" {
				t.Errorf("Resolve outputs (-want +got):\n%s", diff)
			}
		})
	}
}

// The build's session goes on with the source, so the puller and the
// snapshotter know where the client's secrets and content are; one that
// is not a subject token is refused before anything reads it.
func TestResolveCarriesTheSession(t *testing.T) {
	t.Parallel()
	op := events.SourceOp{Identifier: "git://github.com/moby/buildkit#v0.34.1", Platform: &linuxAMD64}
	h := resolver.NewHandler(linuxAMD64)
	key, err := session.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	in := events.New(events.SourceResolveRequested{Source: op, Snapshot: true, Session: key.ID})
	in.ID, in.BuildID = "b1-request", "b1"
	if err := key.SignRequest(&in); err != nil {
		t.Fatal(err)
	}
	got, err := bus.Typed(h.Resolve)(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	want := []events.Event{
		events.New(events.SourceResolved{Source: op, Scheme: source.SchemeGit, Handler: events.ComponentPuller, Snapshot: true, Session: key.ID}),
		events.New(events.CacheKeyRequested{Source: op, Index: 0, Snapshot: true, Session: key.ID}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Resolve outputs (-want +got):\n%s", diff)
	}
	// An id that is not a session key cannot have signed the request.
	for _, bad := range []string{"a.b", "s*", "s>", "with space", "sess-1"} {
		in := events.New(events.SourceResolveRequested{Source: op, Session: bad})
		in.ID, in.BuildID = "b2-request", "b2"
		out, err := bus.Typed(h.Resolve)(t.Context(), in)
		if err == nil || !failure.Permanent(err) || !strings.Contains(err.Error(), "signed") {
			t.Errorf("session %q: %v, %v; want a permanent error, not signed", bad, out, err)
		}
	}
}
