package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// solveStatus is buildctl's --progress rawjson record, BuildKit's
// client.SolveStatus with the same JSON names: the vertexes that changed,
// the statuses that changed and log lines.
type solveStatus struct {
	Vertexes []*solveVertex `json:"vertexes,omitempty"`
	Statuses []*solveItem   `json:"statuses,omitempty"`
	Logs     []*solveLog    `json:"logs,omitempty"`
}

// solveVertex is BuildKit's client.Vertex.
type solveVertex struct {
	Digest    digest.Digest `json:"digest,omitempty"`
	Name      string        `json:"name,omitempty"`
	Started   *time.Time    `json:"started,omitempty"`
	Completed *time.Time    `json:"completed,omitempty"`
	Cached    bool          `json:"cached,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// solveItem is BuildKit's client.VertexStatus.
type solveItem struct {
	ID        string        `json:"id"`
	Vertex    digest.Digest `json:"vertex,omitempty"`
	Name      string        `json:"name,omitempty"`
	Total     int64         `json:"total,omitempty"`
	Current   int64         `json:"current"`
	Timestamp time.Time     `json:"timestamp"`
	Started   *time.Time    `json:"started,omitempty"`
	Completed *time.Time    `json:"completed,omitempty"`
}

// solveLog is BuildKit's client.VertexLog: Data is base64 in JSON.
type solveLog struct {
	Vertex    digest.Digest `json:"vertex,omitempty"`
	Stream    int           `json:"stream,omitempty"`
	Data      []byte        `json:"data"`
	Timestamp time.Time     `json:"timestamp"`
}

// Log streams, as BuildKit numbers them.
const (
	streamStdout = 1
	streamStderr = 2
)

// rawDisplay prints buildctl's rawjson: one SolveStatus per line for each
// event that changed something. A vertex's digest is the digest of its
// number and name (BuildKit's is the digest of its LLB op, which a source
// of Stevedore has none of). An event that is not progress is a log line
// of its vertex (stderr for a failure): what the event says, as watch
// prints it.
type rawDisplay struct {
	enc *json.Encoder
	t   *tracker
}

func newRawDisplay(w io.Writer) *rawDisplay {
	return &rawDisplay{enc: json.NewEncoder(w), t: newTracker()}
}

func (d *rawDisplay) event(e events.Event) {
	s := d.t.add(e)
	if s.vertex == nil {
		return
	}
	v := s.vertex
	dg := vertexDigest(v)
	sv := &solveVertex{Digest: dg, Name: v.name, Started: timePtr(v.started)}
	if v.result != "" {
		sv.Completed = timePtr(v.ended)
		switch {
		case v.result == resultCached:
			sv.Cached = true
		case v.result != resultDone:
			sv.Error = v.result[len(resultError):]
		}
	}
	st := solveStatus{Vertexes: []*solveVertex{sv}}
	if it := s.progress; it != nil {
		st.Statuses = []*solveItem{{
			ID: it.p.ID, Vertex: dg, Name: it.p.ID, Total: it.p.Total, Current: it.p.Current,
			Timestamp: e.Time, Started: it.p.Started, Completed: it.p.Completed,
		}}
	} else if line := describe(e); line != "" {
		stream := streamStdout
		if _, failed := events.Failure(e.Data); failed {
			stream = streamStderr
		}
		st.Logs = []*solveLog{{Vertex: dg, Stream: stream, Timestamp: e.Time,
			Data: []byte(events.NameOf(e.Type()) + " " + line + "\n")}}
	}
	_ = d.enc.Encode(st)
}

func (d *rawDisplay) done() {}

// vertexDigest names v in rawjson.
func vertexDigest(v *vertex) digest.Digest {
	return digest.FromString(fmt.Sprintf("%d %s", v.index, v.name))
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// quietDisplay shows nothing: --progress quiet.
type quietDisplay struct{}

func (quietDisplay) event(events.Event) {}
func (quietDisplay) done()              {}
