// Package lineage is what the fleet made of each source, kept to explain
// a miss.
//
// Vocabulary: a source's identity (Identity) is its scheme and name
// without tag or digest ("docker-image://host/repo"), so every tag,
// digest, platform and attribute of one image shares it. A sighting
// (events.Sighting) is the facts one record was made from: the tag, the
// digest it resolved to, the platform, the attributes, the keys, the
// layers' diff_ids, and when. The puller keeps the most recent sightings
// of each identity (Store, at most MaxSightings) when it asks for a
// snapshot; when a later request misses, Explain compares its facts with
// the nearest sighting and says what differs (events.MissExplanation,
// carried by cache.miss). The same facts are in the events of the builds
// that made the records, so a watcher can compute the same.
package lineage

import (
	"slices"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

// MaxSightings is how many sightings are kept per source identity, the
// most recent.
const MaxSightings = 16

// Identity is the identity of an image source: "docker-image://" and the
// repository, without tag or digest.
func Identity(img *source.ImageIdentifier) string {
	return source.SchemeDockerImage + "://" + img.Reference.Locator
}

// GitIdentity is the identity of a git source: its identifier without
// the fragment (ref and subdirectory), so every ref of a repository
// shares it, whatever transport git.fullurl names.
func GitIdentity(identifier string) string {
	id, _, _ := strings.Cut(identifier, "#")
	return id
}

// GitRef is the Tag of a git sighting: the identity and the ref as the
// identifier named it ("" for the default branch).
func GitRef(identifier, ref string) string { return GitIdentity(identifier) + "#" + ref }

// keyless are the attributes that change neither a key nor the content:
// how a tag is resolved, and the names of the secrets credentials come
// from.
var keyless = map[string]bool{
	source.AttrImageResolveMode: true, source.AttrImageTagMaxAge: true,
	source.AttrAuthTokenSecret: true, source.AttrAuthHeaderSecret: true, source.AttrHTTPAuthHeaderSecret: true,
}

// Attrs returns the attributes of op that change its keys or content,
// sorted by name.
func Attrs(op events.SourceOp) []events.Attr {
	var out []events.Attr
	for k, v := range op.Attrs {
		if !keyless[k] && v != "" {
			out = append(out, events.Attr{Name: k, Value: v})
		}
	}
	slices.SortFunc(out, func(a, b events.Attr) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Present reports whether the cache index still holds the record of a
// solver digest.
type Present func(d digest.Digest) bool

// Explain compares miss with the nearest of recent (the fewest
// differences; the most recent of equals), leaving out the sightings of
// miss's own build. present says whether the cache index still holds the
// nearest's record (it is asked once). With no sighting to compare, the explanation has no Nearest: the
// fleet never made a record of the source.
func Explain(identity string, miss events.Sighting, recent []events.Sighting, present Present) events.MissExplanation {
	out := events.MissExplanation{Source: identity}
	var best []events.Difference
	for i := range recent {
		s := recent[i]
		if s.Build == miss.Build && miss.Build != "" {
			continue
		}
		d := differences(miss, s)
		if out.Nearest == nil || len(d) < len(best) || (len(d) == len(best) && s.SeenAt.After(out.Nearest.SeenAt)) {
			out.Nearest, best = &recent[i], d
		}
	}
	// Only the nearest record is looked up: one index read per miss.
	if n := out.Nearest; n != nil && len(n.Keys) > 0 && present != nil && !present(n.Keys[len(n.Keys)-1]) {
		best = append(best, events.Difference{Kind: events.DiffPruned, Old: n.Keys[len(n.Keys)-1].String()})
	}
	out.Differences = best
	return out
}

// differences are what miss differs in from the facts of s.
func differences(miss, s events.Sighting) []events.Difference {
	var out []events.Difference
	oldSeen, newSeen := s.SeenAt, miss.SeenAt
	switch {
	case miss.Tag != "" && miss.Tag == s.Tag && miss.Pin != s.Pin:
		out = append(out, events.Difference{Kind: movedKind(miss.Identifier), Name: miss.Tag, Old: s.Pin, New: miss.Pin, OldSeen: &oldSeen, NewSeen: &newSeen})
	case miss.Pin != s.Pin:
		out = append(out, events.Difference{Kind: events.DiffReference, Old: s.Identifier, New: miss.Identifier, OldSeen: &oldSeen, NewSeen: &newSeen})
	}
	if miss.ETag != s.ETag {
		out = append(out, events.Difference{Kind: events.DiffETag, Old: s.ETag, New: miss.ETag})
	}
	if o, n := stampOf(s.LastModified), stampOf(miss.LastModified); o != n {
		out = append(out, events.Difference{Kind: events.DiffLastModified, Old: o, New: n})
	}
	if miss.Platform != s.Platform {
		out = append(out, events.Difference{Kind: events.DiffPlatform, Old: s.Platform, New: miss.Platform})
	}
	out = append(out, attrDifferences(s.Attrs, miss.Attrs)...)
	if d, ok := firstLayer(s.DiffIDs, miss.DiffIDs); ok {
		out = append(out, d)
	}
	return out
}

// movedKind is the kind of difference a name that points elsewhere now
// is, by the identifier's scheme: a git ref moved, an http URL serves
// other content, an image tag moved.
func movedKind(identifier string) string {
	scheme, _, _ := strings.Cut(identifier, "://")
	switch scheme {
	case source.SchemeGit:
		return events.DiffRefMoved
	case source.SchemeHTTP, source.SchemeHTTPS:
		return events.DiffContentChanged
	}
	return events.DiffTagMoved
}

// stampOf is t in RFC 3339, empty for nil.
func stampOf(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// attrDifferences compares two sorted attribute lists.
func attrDifferences(old, cur []events.Attr) []events.Difference {
	values := map[string][2]string{}
	var names []string
	for _, a := range old {
		v := values[a.Name]
		v[0] = a.Value
		values[a.Name] = v
		names = append(names, a.Name)
	}
	for _, a := range cur {
		v, seen := values[a.Name]
		v[1] = a.Value
		values[a.Name] = v
		if !seen {
			names = append(names, a.Name)
		}
	}
	slices.Sort(names)
	var out []events.Difference
	for _, n := range names {
		if v := values[n]; v[0] != v[1] {
			out = append(out, events.Difference{Kind: events.DiffAttribute, Name: n, Old: v[0], New: v[1]})
		}
	}
	return out
}

// firstLayer is the first layer whose diff_id differs, bottom first; ok
// is false when the layers are the same.
func firstLayer(old, cur []digest.Digest) (events.Difference, bool) {
	for i := range max(len(old), len(cur)) {
		var o, c string
		if i < len(old) {
			o = old[i].String()
		}
		if i < len(cur) {
			c = cur[i].String()
		}
		if o != c {
			return events.Difference{Kind: events.DiffLayer, Name: strconv.Itoa(i), Old: o, New: c}, true
		}
	}
	return events.Difference{}, false
}

// Remember puts s first among recent, dropping an older sighting of the
// same build and keys, and the oldest beyond MaxSightings.
func Remember(recent []events.Sighting, s events.Sighting) []events.Sighting {
	out := []events.Sighting{s}
	for _, r := range recent {
		if r.Build == s.Build && slices.Equal(r.Keys, s.Keys) {
			continue
		}
		if len(out) == MaxSightings {
			break
		}
		out = append(out, r)
	}
	return out
}

// seenAt is t in UTC without its monotonic reading, as it is stored.
func seenAt(t time.Time) time.Time { return t.UTC().Round(0) }
