package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// TestExplanationLinesOfGitAndHTTP: the differences a git or http miss
// carries are said in their own sentences, not the generic "KIND: old
// then, new now".
func TestExplanationLinesOfGitAndHTTP(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	nearest := &events.Sighting{Build: "old", Identifier: "git://h/r.git#main", SeenAt: t0}
	for name, tc := range map[string]struct {
		diffs []events.Difference
		want  []string
	}{
		"git ref moved": {
			diffs: []events.Difference{{Kind: events.DiffRefMoved, Name: "git://h/r.git#main", Old: "c1", New: "c2", OldSeen: &t0, NewSeen: &t1}},
			want:  []string{"ref moved: git://h/r.git#main pointed to c1 (seen 2026-12-07T09:00:00Z), now to c2 (seen 2026-12-07T10:00:00Z)"},
		},
		"http content changed": {
			diffs: []events.Difference{
				{Kind: events.DiffContentChanged, Name: "https://h/f", Old: "sha256:d1", New: "sha256:d2", OldSeen: &t0, NewSeen: &t1},
				{Kind: events.DiffETag, Old: `"a"`, New: ""},
				{Kind: events.DiffLastModified, Old: "2026-12-01T09:00:00Z", New: "2026-12-07T16:00:00Z"},
			},
			want: []string{
				"content changed: https://h/f served sha256:d1 (seen 2026-12-07T09:00:00Z), now sha256:d2 (seen 2026-12-07T10:00:00Z)",
				`ETag: "a" in the record, none now`,
				"Last-Modified: 2026-12-01T09:00:00Z in the record, 2026-12-07T16:00:00Z now",
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := explanationLines(&events.MissExplanation{Source: "s", Nearest: nearest, Differences: tc.diffs})
			if len(got) == 0 {
				t.Fatal("no lines")
			}
			if diff := cmp.Diff(tc.want, got[1:]); diff != "" {
				t.Errorf("lines after the nearest record (-want +got):\n%s", diff)
			}
		})
	}
}
