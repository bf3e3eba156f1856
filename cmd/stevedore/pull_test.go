package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/client"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// A hit's record says where its snapshot is when its snapshotter wrote
// that; a record written before records carried it says nothing rather
// than something wrong.
func TestPullHitSaysSnapshotterOnlyWhenRecorded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		record events.CacheRecord
		want   string
	}{
		{"recorded", events.CacheRecord{Node: "n1", SnapshotKey: "k", Snapshotter: "native", SnapshotsDir: "/data/snapshots/native"},
			"snapshot  snapshot k on node n1 (native snapshotter in /data/snapshots/native)\n"},
		{"old record", events.CacheRecord{Node: "n1", SnapshotKey: "k"}, "snapshot  snapshot k on node n1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			printPull(&b, client.Outcome{Hit: &events.CacheHit{Record: tc.record}}, &fleet{})
			if !strings.Contains(b.String(), tc.want) {
				t.Errorf("printed\n%s\nwant a line %q", b.String(), tc.want)
			}
		})
	}
}
