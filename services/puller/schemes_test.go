package puller

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// scheme is an identifier of a scheme and nothing else: what the manager
// routes by.
type scheme string

func (s scheme) Scheme() string { return string(s) }
func (s scheme) String() string { return string(s) + "://" }

// The handler as the service makes it (with http and sessions) has a key
// function for every scheme the scheme table routes to the puller: a
// scheme that lacks one fails here, not at run time with "no handler".
func TestEverySchemeRoutedHereHasAKeyFunction(t *testing.T) {
	t.Parallel()
	h, err := NewHandler(nil, nil, nil, ocispec.Platform{}, WithHTTP(struct{ Flight }{}), WithSessions(struct{ Sessions }{}))
	if err != nil {
		t.Fatal(err)
	}
	routed := 0
	for _, s := range source.SchemeTable() {
		if s.Route != events.ComponentPuller {
			continue
		}
		routed++
		if _, err := h.manager.Resolve(scheme(s.Name)); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
	if routed == 0 {
		t.Error("the scheme table routes nothing to the puller")
	}
}

// missIndex is a cache index that has nothing.
type missIndex struct{}

func (missIndex) Get(context.Context, digest.Digest) (events.CacheRecord, bool, error) {
	return events.CacheRecord{}, false, nil
}

// emptyFlight is a fleet that has kept nothing and keeps nothing (the
// lineage a miss is explained with); anything else panics.
type emptyFlight struct{ Flight }

func (emptyFlight) Get(context.Context, string) ([]byte, bool, error) { return nil, false, nil }
func (emptyFlight) Update(context.Context, string, func([]byte, bool) ([]byte, error)) error {
	return nil
}

// routedHere is a request, for every scheme the table routes to the
// puller, that gets to the content step without the network: a miss, for
// a client that wants the content.
func routedHere() map[string]events.CacheKeyRequested {
	blob := digest.FromString("blob")
	k0 := events.CacheKey{Index: 0, Key: "k0", Digest: digest.FromString("k0"), Pin: blob.String()}
	layers := &events.CacheOpts{RootFSType: "layers", Layers: []events.Layer{{
		Blob: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: blob, Size: 4}, DiffID: digest.FromString("diff")}}}
	op := func(id string, attrs map[string]string) events.SourceOp {
		return events.SourceOp{Identifier: id, Attrs: attrs}
	}
	return map[string]events.CacheKeyRequested{
		source.SchemeDockerImage:     {Source: op("docker-image://example.com/repo:1", nil), Index: 1, Keys: []events.CacheKey{k0}, CacheOpts: layers},
		source.SchemeOCILayout:       {Source: op("oci-layout://local/store@"+blob.String(), nil), Index: 1, Keys: []events.CacheKey{k0}, CacheOpts: layers},
		source.SchemeDockerImageBlob: {Source: op("docker-image+blob://example.com/repo@"+blob.String(), nil)},
		source.SchemeOCILayoutBlob:   {Source: op("oci-layout+blob://local/store@"+blob.String(), map[string]string{source.AttrOCILayoutStoreID: "store"})},
		source.SchemeGit:             {Source: op("git://example.com/repo.git#"+strings.Repeat("a", 40), nil)},
		source.SchemeHTTP:            {Source: op("http://example.com/f", map[string]string{source.AttrHTTPChecksum: blob.String()})},
		source.SchemeHTTPS:           {Source: op("https://example.com/f", map[string]string{source.AttrHTTPChecksum: blob.String()})},
		source.SchemeLocal:           {Source: op("local://context", nil)},
	}
}

// newRoutedHandler is the handler as the service makes it, with a fleet
// and an index that have nothing.
func newRoutedHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := NewHandler(nil, emptyFlight{}, missIndex{}, ocispec.Platform{OS: "linux", Architecture: "amd64"},
		WithHTTP(emptyFlight{}), WithSessions(struct{ Sessions }{}))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// On a miss, every scheme routed here asks the snapshotter for the kind of
// content the scheme table names: a scheme added without a request here,
// or whose key function sends another kind, fails here, not in the fleet
// tests.
func TestEverySchemeRoutedHereSendsTheContentTheTableNames(t *testing.T) {
	t.Parallel()
	requests := routedHere()
	for _, s := range source.SchemeTable() {
		if s.Route != events.ComponentPuller {
			continue
		}
		in, ok := requests[s.Name]
		if !ok {
			t.Errorf("%s: no request in routedHere to get it to its content step", s.Name)
			continue
		}
		in.Snapshot, in.Session = true, "build-session"
		out, err := newRoutedHandler(t).CacheKey(t.Context(), in)
		if err != nil {
			t.Errorf("%s: CacheKey: %v", s.Name, err)
			continue
		}
		var kinds []source.ContentKind
		for _, e := range out {
			if r, ok := e.Data.(events.SnapshotRequested); ok {
				kinds = append(kinds, source.ContentOf(r))
			}
		}
		if want := []source.ContentKind{s.Content}; !slices.Equal(kinds, want) {
			t.Errorf("%s: snapshot.requested asks for %q, want %q", s.Name, kinds, want)
		}
	}
}

// A key function that asks for a kind of content other than the one its
// scheme's table entry names fails for good, and sends nothing.
func TestContentOfAnotherKindThanTheTableNamesFails(t *testing.T) {
	t.Parallel()
	carrying := map[source.ContentKind]events.SnapshotRequested{
		source.ContentLayers: {CacheOpts: &events.CacheOpts{}},
		source.ContentFile:   {Content: &events.Content{File: &events.FileContent{}}},
		source.ContentGit:    {Content: &events.Content{Git: &events.GitContent{}}},
		source.ContentLocal:  {Content: &events.Content{Local: &events.LocalContent{}}},
	}
	requests := routedHere()
	for _, s := range source.SchemeTable() {
		in, ok := requests[s.Name]
		if s.Route != events.ComponentPuller || !ok {
			continue // TestEverySchemeRoutedHereSendsTheContentTheTableNames says so
		}
		for _, kind := range source.ContentKinds {
			sent, ok := carrying[kind]
			if !ok {
				t.Fatalf("no request carrying %q content", kind)
			}
			h := newRoutedHandler(t)
			h.manager.Register(func(context.Context, source.Identifier, events.CacheKeyRequested) ([]events.Event, error) {
				return []events.Event{events.New(events.CacheMiss{Source: in.Source}), events.New(sent)}, nil
			}, s.Name)
			out, err := h.CacheKey(t.Context(), in)
			if kind == s.Content {
				if err != nil || len(out) != 2 {
					t.Errorf("%s sending %q: CacheKey = %d events, %v; want both, no error", s.Name, kind, len(out), err)
				}
				continue
			}
			if err == nil || !failure.Permanent(err) || len(out) != 0 || !strings.Contains(err.Error(), "the scheme table says") {
				t.Errorf("%s sending %q: CacheKey = %d events, %v; want a permanent error naming the table, nothing sent", s.Name, kind, len(out), err)
			}
		}
	}
}
