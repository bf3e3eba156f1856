package lineage_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
	"github.com/stevedore-dev/stevedore/pkg/lineage"
	"github.com/stevedore-dev/stevedore/pkg/source"
)

var (
	t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	t1 = time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
)

func dg(s string) digest.Digest { return digest.FromString(s) }

// made is a record made a week ago of alpine:3.20 for linux/amd64.
func made() events.Sighting {
	return events.Sighting{
		Build: "old", Identifier: "docker-image://docker.io/library/alpine:3.20", Tag: "docker.io/library/alpine:3.20",
		Pin: dg("top-a").String(), Platform: "linux/amd64", Keys: []digest.Digest{dg("k0-a"), dg("k1-a")},
		DiffIDs: []digest.Digest{dg("l0"), dg("l1")}, SeenAt: t0,
	}
}

func all(digest.Digest) bool { return true }

func TestExplainEachKind(t *testing.T) {
	t.Parallel()
	old, now := t0, t1
	for _, tc := range []struct {
		name    string
		miss    func(*events.Sighting)
		present lineage.Present
		want    []events.Difference
	}{{
		name: "tag moved",
		miss: func(s *events.Sighting) {
			s.Pin, s.Keys, s.DiffIDs = dg("top-b").String(), []digest.Digest{dg("k0-b"), dg("k1-b")}, []digest.Digest{dg("l0"), dg("l1-b")}
		},
		want: []events.Difference{
			{Kind: events.DiffTagMoved, Name: "docker.io/library/alpine:3.20", Old: dg("top-a").String(), New: dg("top-b").String(), OldSeen: &old, NewSeen: &now},
			{Kind: events.DiffLayer, Name: "1", Old: dg("l1").String(), New: dg("l1-b").String()},
		},
	}, {
		name: "another reference",
		miss: func(s *events.Sighting) {
			s.Identifier, s.Tag, s.Pin = "docker-image://docker.io/library/alpine:3.21", "docker.io/library/alpine:3.21", dg("top-c").String()
		},
		want: []events.Difference{
			{Kind: events.DiffReference, Old: "docker-image://docker.io/library/alpine:3.20", New: "docker-image://docker.io/library/alpine:3.21", OldSeen: &old, NewSeen: &now},
		},
	}, {
		name: "platform",
		miss: func(s *events.Sighting) { s.Platform, s.DiffIDs = "linux/arm64", []digest.Digest{dg("a0"), dg("a1")} },
		want: []events.Difference{
			{Kind: events.DiffPlatform, Old: "linux/amd64", New: "linux/arm64"},
			{Kind: events.DiffLayer, Name: "0", Old: dg("l0").String(), New: dg("a0").String()},
		},
	}, {
		name: "layer limit",
		miss: func(s *events.Sighting) {
			s.Attrs, s.DiffIDs = []events.Attr{{Name: source.AttrImageLayerLimit, Value: "1"}}, s.DiffIDs[:1]
		},
		want: []events.Difference{
			{Kind: events.DiffAttribute, Name: source.AttrImageLayerLimit, New: "1"},
			{Kind: events.DiffLayer, Name: "1", Old: dg("l1").String()},
		},
	}, {
		name: "pruned",
		miss: func(*events.Sighting) {},
		present: func(d digest.Digest) bool {
			return d != dg("k1-a")
		},
		want: []events.Difference{{Kind: events.DiffPruned, Old: dg("k1-a").String()}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			miss := made()
			miss.Build, miss.SeenAt = "new", t1
			tc.miss(&miss)
			present := tc.present
			if present == nil {
				present = all
			}
			got := lineage.Explain("docker-image://docker.io/library/alpine", miss, []events.Sighting{made()}, present)
			if got.Nearest == nil || got.Nearest.Build != "old" {
				t.Fatalf("nearest %+v, want the old record", got.Nearest)
			}
			if diff := cmp.Diff(tc.want, got.Differences); diff != "" {
				t.Errorf("differences (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExplainPicksTheNearest(t *testing.T) {
	t.Parallel()
	arm := made()
	arm.Build, arm.Platform, arm.SeenAt = "arm", "linux/arm64", t0.Add(time.Hour)
	older := made()
	older.Build, older.SeenAt = "older", t0.Add(-time.Hour)
	miss := made()
	miss.Build, miss.SeenAt, miss.Pin = "new", t1, dg("top-b").String()
	asked := 0
	got := lineage.Explain("id", miss, []events.Sighting{arm, made(), older}, func(digest.Digest) bool { asked++; return true })
	if got.Nearest == nil || got.Nearest.Build != "old" {
		t.Fatalf("nearest %+v, want the most recent with the fewest differences", got.Nearest)
	}
	if asked != 1 {
		t.Errorf("the cache index was asked %d times, want once (the nearest)", asked)
	}
	// Its own build's sighting is never the nearest; with nothing else
	// there is no record to compare.
	self := made()
	self.Build = "new"
	if got := lineage.Explain("id", miss, []events.Sighting{self}, all); got.Nearest != nil || got.Differences != nil {
		t.Errorf("only its own sighting: %+v, want no nearest", got)
	}
}

func TestRememberKeepsTheMostRecent(t *testing.T) {
	t.Parallel()
	var recent []events.Sighting
	for i := range lineage.MaxSightings + 3 {
		s := made()
		s.Build = string(rune('a' + i))
		recent = lineage.Remember(recent, s)
	}
	if len(recent) != lineage.MaxSightings || recent[0].Build != string(rune('a'+lineage.MaxSightings+2)) {
		t.Fatalf("kept %d, first %q", len(recent), recent[0].Build)
	}
	// A build's second sighting of the same keys replaces its first.
	again := recent[3]
	recent = lineage.Remember(recent, again)
	n := 0
	for _, r := range recent {
		if r.Build == again.Build {
			n++
		}
	}
	if n != 1 || recent[0].Build != again.Build {
		t.Errorf("%d sightings of build %s after remembering it again", n, again.Build)
	}
}

// A git ref that points elsewhere is a ref that moved, an http URL that
// serves other content is content that changed, with the validators that
// changed beside it.
func TestExplainMovedNamesBySource(t *testing.T) {
	t.Parallel()
	old, now := t0, t1
	lm0, lm1 := t0.Add(-time.Hour), t1.Add(-time.Hour)
	for _, tc := range []struct {
		name      string
		made, now events.Sighting
		want      []events.Difference
	}{{
		name: "git",
		made: events.Sighting{Build: "old", Identifier: "git://h/r.git#main", Tag: "git://h/r.git#main", Pin: "c1", Keys: []digest.Digest{dg("g1")}, SeenAt: t0},
		now:  events.Sighting{Build: "new", Identifier: "git://h/r.git#main", Tag: "git://h/r.git#main", Pin: "c2", Keys: []digest.Digest{dg("g2")}, SeenAt: t1},
		want: []events.Difference{{Kind: events.DiffRefMoved, Name: "git://h/r.git#main", Old: "c1", New: "c2", OldSeen: &old, NewSeen: &now}},
	}, {
		name: "http",
		made: events.Sighting{Build: "old", Identifier: "https://h/f", Tag: "https://h/f", Pin: "d1", ETag: `"a"`, LastModified: &lm0, Keys: []digest.Digest{dg("h1")}, SeenAt: t0},
		now:  events.Sighting{Build: "new", Identifier: "https://h/f", Tag: "https://h/f", Pin: "d2", ETag: `"b"`, LastModified: &lm1, Keys: []digest.Digest{dg("h2")}, SeenAt: t1},
		want: []events.Difference{
			{Kind: events.DiffContentChanged, Name: "https://h/f", Old: "d1", New: "d2", OldSeen: &old, NewSeen: &now},
			{Kind: events.DiffETag, Old: `"a"`, New: `"b"`},
			{Kind: events.DiffLastModified, Old: "2026-12-01T09:00:00Z", New: "2026-12-07T16:00:00Z"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := lineage.Explain("id", tc.now, []events.Sighting{tc.made}, all)
			if diff := cmp.Diff(tc.want, got.Differences); diff != "" {
				t.Errorf("differences (-want +got):\n%s", diff)
			}
		})
	}
}
