package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// testBuild makes the events of one build, each 100ms after the one before,
// the way the fleet stamps them.
type testBuild struct {
	id string
	t  time.Time
	n  int
}

func newBuild(id string) *testBuild {
	return &testBuild{id: id, t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// at is the time of the n-th event.
func (b *testBuild) at(n int) *time.Time {
	t := b.t.Add(time.Duration(n) * 100 * time.Millisecond)
	return &t
}

// ev returns the next event, with payload p, caused by the event cause
// (its id; "" for a request).
func (b *testBuild) ev(p events.Payload, cause string) events.Event {
	b.n++
	return events.Event{ID: b.id + "-" + strings.Repeat("e", b.n), BuildID: b.id, Time: *b.at(b.n), CausationID: cause, Data: p}
}

// status is the next event: a progress that started back events before
// it, and completed with it when done is set.
func (b *testBuild) status(vertex, id string, back int, done bool, cause string) events.Event {
	p := events.Progress{Vertex: vertex, ID: id, Started: b.at(b.n + 1 - back)}
	if done {
		p.Action, p.Completed = "done", b.at(b.n+1)
	}
	return b.ev(p, cause)
}

func render(evs []events.Event) string {
	var buf bytes.Buffer
	d, err := newDisplay(progressPlain, "Pulling", &buf)
	if err != nil {
		panic(err)
	}
	for _, e := range evs {
		d.event(e)
	}
	d.done()
	return buf.String()
}

const (
	testSource   = "docker-image://example.com/demo/app:1"
	testLayer    = "sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047"
	importVertex = "importing cache manifest from /tmp/cache"
	exportVertex = "exporting cache to client directory"
)

func pullEvents(b *testBuild, hit events.CacheHit) []events.Event {
	op := events.SourceOp{Identifier: testSource}
	evs := []events.Event{
		b.ev(events.SourceResolveRequested{Source: op, Snapshot: true}, ""),
		b.ev(events.SourceResolved{Source: op, Scheme: "docker-image", Handler: "puller", Snapshot: true}, ""),
		b.status(testSource, "resolve example.com/demo/app:1", 1, true, ""),
	}
	if hit.Snapshot {
		evs = append(evs, b.ev(hit, ""))
	} else {
		evs = append(evs, b.ev(events.CacheMiss{Source: op}, ""))
	}
	n := b.n
	evs = append(evs,
		b.ev(events.Progress{Vertex: testSource, ID: testLayer, Current: 10, Total: 3 << 20, Started: b.at(n)}, ""),
		// Under a megabyte since the last line: not printed.
		b.ev(events.Progress{Vertex: testSource, ID: testLayer, Current: 1000, Total: 3 << 20, Started: b.at(n)}, ""),
		b.ev(events.Progress{Vertex: testSource, ID: testLayer, Current: 3 << 20, Total: 3 << 20, Started: b.at(n), Completed: b.at(n + 3)}, ""),
		b.status(testSource, "extracting "+testLayer, 3, true, ""),
		b.ev(events.SnapshotReady{Source: op}, ""),
	)
	return evs
}

// A pull alone prints what it always did: one vertex, byte-compatible.
func TestPlainOneVertex(t *testing.T) {
	t.Parallel()
	got := render(pullEvents(newBuild("b1"), events.CacheHit{}))
	want := `#1 docker-image://example.com/demo/app:1
#1 resolve example.com/demo/app:1 0.1s done
#1 sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 10B / 3.15MB 0.1s
#1 sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 3.15MB / 3.15MB 0.3s done
#1 extracting sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 0.3s done
#1 DONE 0.8s
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plain output (-want +got):\n%s", diff)
	}
}

// An import, a pull that hits it lazily, an export: three vertices in
// order of appearance, each with its lines and its end; the lazy hit is not
// CACHED, the vertex ends with its snapshot.
func TestPlainVertices(t *testing.T) {
	t.Parallel()
	b := newBuild("b2")
	imp := b.ev(events.CacheImportRequested{Source: "type=local,src=/tmp/cache"}, "")
	evs := []events.Event{
		imp,
		b.status(importVertex, importVertex, 0, false, imp.ID), // the vertex's own status: no line
		b.status(importVertex, "inferred cache manifest type: application/vnd.oci.image.manifest.v1+json", 1, true, imp.ID),
		b.status(importVertex, importVertex, 2, true, imp.ID),
		b.ev(events.CacheImported{Source: "type=local,src=/tmp/cache"}, imp.ID),
	}
	evs = append(evs, pullEvents(b, events.CacheHit{Source: events.SourceOp{Identifier: testSource}, Snapshot: true})...)
	exp := b.ev(events.CacheExportRequested{Target: "type=local,dest=/tmp/out", Build: "b2"}, "")
	evs = append(evs, exp,
		b.status(exportVertex, "writing layer "+testLayer, 0, false, exp.ID),
		b.status(exportVertex, "writing layer "+testLayer, 1, true, exp.ID),
		b.ev(events.CacheExported{Target: "type=local,dest=/tmp/out"}, exp.ID),
	)
	got := render(evs)
	want := `#1 importing cache manifest from /tmp/cache
#1 inferred cache manifest type: application/vnd.oci.image.manifest.v1+json 0.1s done
#1 DONE 0.4s

#2 docker-image://example.com/demo/app:1
#2 resolve example.com/demo/app:1 0.1s done
#2 sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 10B / 3.15MB 0.1s
#2 sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 3.15MB / 3.15MB 0.3s done
#2 extracting sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 0.3s done
#2 DONE 0.8s

#3 exporting cache to client directory
#3 writing layer sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 0.0s
#3 writing layer sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 0.1s done
#3 DONE 0.3s
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plain output (-want +got):\n%s", diff)
	}
}

// Resolves (no content asked for) end with CACHED on a hit and DONE on a
// miss; a vertex that another interrupts says so ("#1 ...") and gets its
// header again when it goes on; a failure ends its vertex with ERROR, and
// a cache request that fails before any progress gets a vertex named after
// it.
func TestPlainEnds(t *testing.T) {
	t.Parallel()
	a, c := newBuild("a"), newBuild("c")
	opA := events.SourceOp{Identifier: "docker-image://example.com/a:1"}
	opC := events.SourceOp{Identifier: "docker-image://example.com/c:1"}
	exp := a.ev(events.CacheExportRequested{Target: "type=local,dest=/x"}, "")
	evs := []events.Event{
		a.ev(events.SourceResolveRequested{Source: opA}, ""),
		c.ev(events.SourceResolveRequested{Source: opC}, ""),
		a.ev(events.CacheHit{Source: opA}, ""),
		c.ev(events.CacheMiss{Source: opC}, ""),
		exp,
		a.ev(events.CacheExportFailed{Reason: "cache key sha256:1 is not in the cache index"}, exp.ID),
		a.ev(events.SourceResolveRequested{Source: opA, Snapshot: true}, ""),
	}
	evs[len(evs)-1].BuildID = "a2"
	evs = append(evs, events.Event{BuildID: "a2", Time: *a.at(9), Data: events.SourceFailed{Source: opA, Reason: "example.com/a:1: not found"}})
	got := render(evs)
	want := `#1 docker-image://example.com/a:1
#1 ...

#2 docker-image://example.com/c:1
#2 ...

#1 docker-image://example.com/a:1
#1 CACHED

#2 docker-image://example.com/c:1
#2 DONE 0.1s

#3 exporting cache to type=local,dest=/x
#3 ERROR: cache key sha256:1 is not in the cache index

#4 docker-image://example.com/a:1
#4 ERROR: example.com/a:1: not found
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plain output (-want +got):\n%s", diff)
	}
}

// The tty block has a group of lines per vertex, with its state.
func TestTTYVertices(t *testing.T) {
	t.Parallel()
	b := newBuild("b3")
	imp := b.ev(events.CacheImportRequested{Source: "type=local,src=/tmp/cache"}, "")
	evs := []events.Event{
		imp,
		b.status(importVertex, "inferred cache manifest type: application/vnd.oci.image.manifest.v1+json", 1, true, imp.ID),
		b.ev(events.CacheImported{}, imp.ID),
	}
	evs = append(evs, pullEvents(b, events.CacheHit{Source: events.SourceOp{Identifier: testSource}, Snapshot: true})...)
	exp := b.ev(events.CacheExportRequested{Target: "type=registry,ref=example.com/cache:1"}, "")
	evs = append(evs, exp,
		b.status("exporting cache to registry", "writing layer "+testLayer, 0, false, exp.ID),
		b.ev(events.CacheExportFailed{Reason: "unauthorized"}, exp.ID),
	)
	d := newTTYDisplay(&bytes.Buffer{}, "Pulling")
	for _, e := range evs {
		d.event(e)
	}
	lines := d.frame(*b.at(b.n))
	want := []string{
		" => importing cache manifest from /tmp/cache 0.2s",
		" => => inferred cache manifest type: application/vnd.oci.image.manifest.v1+json 0.1s done",
		" => docker-image://example.com/demo/app:1 0.8s",
		" => => resolve example.com/demo/app:1 0.1s done",
		" => => sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 3.15MB / 3.15MB 0.3s done",
		" => => extracting sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 0.3s done",
		" => ERROR exporting cache to registry",
		" => => writing layer sha256:2fc37e322dbdb39c45131e1a879ba6167d57c1ab688b68b9e62f1c7d11359047 0.1s",
		"ERROR: unauthorized",
	}
	if !strings.HasPrefix(lines[0], "[+] Pulling ") || !strings.HasSuffix(lines[0], " (4/5)") {
		t.Errorf("title %q", lines[0])
	}
	if diff := cmp.Diff(want, lines[1:]); diff != "" {
		t.Errorf("tty frame (-want +got):\n%s", diff)
	}
}
