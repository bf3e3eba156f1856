package source

import (
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// ContentKind is what the snapshot of a scheme's source is made of: the
// layers of snapshot.requested's cacheOpts, or the kind of its content
// (events.Content.Kind, the name of the one field set).
type ContentKind string

const (
	// ContentLayers is an image's layer chain (snapshot.requested's
	// cacheOpts).
	ContentLayers ContentKind = "layers"
	// ContentFile is one file (events.Content.File).
	ContentFile ContentKind = "file"
	// ContentGit is a checkout (events.Content.Git).
	ContentGit ContentKind = "git"
	// ContentLocal is a client's directory (events.Content.Local).
	ContentLocal ContentKind = "local"
)

// ContentKinds lists every kind of content, in the order of
// events.Content's fields after the layers.
var ContentKinds = []ContentKind{ContentLayers, ContentFile, ContentGit, ContentLocal}

// ContentOf is the kind of content r asks for: its Content's kind when it
// carries content, ContentLayers when it carries only cacheOpts. It is
// empty when r names nothing to snapshot or content of more than one kind
// (events.Content.Validate says why).
func ContentOf(r events.SnapshotRequested) ContentKind {
	switch {
	case r.Content != nil:
		return ContentKind(r.Content.Kind())
	case r.CacheOpts != nil:
		return ContentLayers
	}
	return ""
}

// parseFunc parses the part after "<scheme>://" with the op's attributes.
type parseFunc func(scheme, ref string, attrs map[string]string, platform *ocispec.Platform) (Identifier, error)

// SchemeSpec is one scheme as the fleet knows it: each scheme's file
// declares its own once (registerScheme, from init), and the resolver
// (Route), the puller (a key function for every scheme routed to it) and
// the snapshotter (Content) are driven from the table; a test fails when
// one of them lacks a piece. docs/dev/adding-a-scheme.md walks through
// adding one.
type SchemeSpec struct {
	// Name is the scheme, as in "<Name>://".
	Name string
	// Route is the component the resolver sends the scheme's
	// cachekey.requested to (events.ComponentPuller).
	Route string
	// Content is what the scheme's snapshot is made of.
	Content ContentKind
	// parse parses the part after "<Name>://".
	parse parseFunc
}

// schemes is the table: every scheme Parse understands, once.
var schemes = map[string]SchemeSpec{}

// registerScheme adds specs to the table; a scheme declared twice panics.
func registerScheme(specs ...SchemeSpec) {
	for _, s := range specs {
		if _, dup := schemes[s.Name]; dup {
			panic("source: scheme " + s.Name + " declared twice")
		}
		schemes[s.Name] = s
	}
}

// Scheme returns the spec of the scheme name.
func Scheme(name string) (SchemeSpec, bool) {
	s, ok := schemes[name]
	return s, ok
}

// SchemeTable lists every scheme's spec, by name.
func SchemeTable() []SchemeSpec {
	out := make([]SchemeSpec, 0, len(schemes))
	for _, s := range schemes {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b SchemeSpec) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Schemes lists every scheme Parse understands, by name.
func Schemes() []string {
	out := make([]string, 0, len(schemes))
	for _, s := range SchemeTable() {
		out = append(out, s.Name)
	}
	return out
}

// Parses reports whether the spec has a parser (the table's test).
func (s SchemeSpec) Parses() bool { return s.parse != nil }
