package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Progress modes, as buildctl names them.
const (
	progressAuto    = "auto"
	progressTTY     = "tty"
	progressPlain   = "plain"
	progressRawJSON = "rawjson"
	progressQuiet   = "quiet"
)

// Results a vertex ends with, as buildctl prints them.
const (
	resultDone   = "DONE"
	resultCached = "CACHED"
	resultError  = "ERROR: "
)

// display renders a build's events as progress.
type display interface {
	// event takes one event of the build.
	event(e events.Event)
	// done ends the display (the last frame of a tty).
	done()
}

// newDisplay returns the display of mode writing to w; auto is tty when w
// is a terminal, plain otherwise. title heads the tty block ("Pulling").
func newDisplay(mode, title string, w io.Writer) (display, error) {
	if mode == progressAuto {
		mode = progressPlain
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			mode = progressTTY
		}
	}
	switch mode {
	case progressPlain:
		return &plainDisplay{w: w, t: newTracker()}, nil
	case progressTTY:
		return newTTYDisplay(w, title), nil
	case progressRawJSON:
		return newRawDisplay(w), nil
	case progressQuiet:
		return quietDisplay{}, nil
	}
	return nil, fmt.Errorf("--progress %q: want auto, tty, plain, rawjson or quiet", mode)
}

// item is one status line of a vertex: a progress ID and its last state.
type item struct {
	p       events.Progress
	printed int64
	done    bool
}

// vertex is one step as buildctl shows it: a number in the order of first
// appearance, a name, its status lines, and how it ended.
type vertex struct {
	index   int
	name    string
	started time.Time
	ended   time.Time
	// result is "" while the vertex runs, then resultDone, resultCached
	// or resultError plus the reason.
	result string
	items  map[string]*item
	order  []string
	// pull is set for a source whose build wants its content: a miss
	// does not end it, its snapshot does.
	pull bool
}

// end records how the vertex ended; false when it had ended already.
func (v *vertex) end(at time.Time, result string) bool {
	if v.result != "" {
		return false
	}
	v.result, v.ended = result, at
	return true
}

// item returns the status line id, adding it when new.
func (v *vertex) item(id string) *item {
	it := v.items[id]
	if it == nil {
		it = &item{}
		v.items[id] = it
		v.order = append(v.order, id)
	}
	return it
}

// request is a cache export or import the display has seen asked for.
type request struct {
	at time.Time
	// name is the vertex to show when no progress names one (the request
	// failed before the exporter started a vertex).
	name string
	// v is the vertex of the request's progress, once there is one.
	v     *vertex
	ended bool
}

// tracker maps a build's events to vertices: a source's events to its
// vertex; a progress event to the vertex it names (the source's when it
// names none); the end of a cache export or import to the vertex of the
// progress that request caused.
type tracker struct {
	vertices []*vertex
	// sources holds the source vertex of each build, and names the
	// identifiers (as asked, and canonical) that mean it.
	sources map[string]*vertex
	names   map[*vertex][]string
	// requests holds the cache requests by event id, last the latest.
	requests map[string]*request
	last     *request
}

func newTracker() *tracker {
	return &tracker{sources: map[string]*vertex{}, names: map[*vertex][]string{}, requests: map[string]*request{}}
}

// step is what one event changed.
type step struct {
	// vertex is the vertex the event belongs to; nil when it shows nothing
	// (yet).
	vertex *vertex
	// progress is the status line the event updated, if any.
	progress *item
	// ended is set when the event ended the vertex.
	ended bool
}

// add folds e in.
func (t *tracker) add(e events.Event) step {
	switch p := e.Data.(type) {
	case events.CacheExportRequested:
		t.request(e, "exporting cache to "+p.Target)
		return step{}
	case events.CacheImportRequested:
		t.request(e, "importing cache manifest from "+p.Source)
		return step{}
	case events.Progress:
		v := t.progressVertex(e, p)
		if v.started.IsZero() {
			v.started = e.Time
		}
		if p.ID == v.name {
			// The vertex's own one-off status: buildctl shows no line for
			// it, the vertex's end shows how it went.
			return step{vertex: v}
		}
		it := v.item(p.ID)
		it.p, it.done = p, p.Completed != nil
		return step{vertex: v, progress: it}
	case events.CacheExported, events.CacheImported:
		v := t.requestVertex(e)
		return step{vertex: v, ended: v.end(e.Time, resultDone)}
	case events.CacheExportFailed, events.CacheImportFailed:
		f, _ := events.Failure(p)
		v := t.requestVertex(e)
		return step{vertex: v, ended: v.end(e.Time, resultError+f.Reason)}
	}
	src, ok := events.SourceOf(e.Data)
	if !ok {
		return step{}
	}
	v := t.sourceVertex(e.BuildID, src.Identifier, e.Time)
	ended := false
	switch p := e.Data.(type) {
	case events.SourceResolveRequested:
		v.pull = p.Snapshot
	case events.SourceResolved:
		v.pull = v.pull || p.Snapshot
	case events.CacheHit:
		// A lazy hit (an imported cache) goes on to its snapshot.
		if !p.Snapshot {
			ended = v.end(e.Time, resultCached)
		}
	case events.CacheMiss:
		if !v.pull {
			ended = v.end(e.Time, resultDone)
		}
	case events.SnapshotReady:
		ended = v.end(e.Time, resultDone)
	case events.SourceFailed:
		ended = v.end(e.Time, resultError+p.Reason)
	case events.SnapshotFailed:
		ended = v.end(e.Time, resultError+p.Reason)
	}
	if v.result != "" && !ended {
		return step{} // nothing more to show for an ended source
	}
	return step{vertex: v, ended: ended}
}

func (t *tracker) open(name string, at time.Time) *vertex {
	v := &vertex{index: len(t.vertices) + 1, name: name, started: at, items: map[string]*item{}}
	t.vertices = append(t.vertices, v)
	return v
}

func (t *tracker) request(e events.Event, name string) {
	r := &request{at: e.Time, name: name}
	t.requests[e.ID] = r
	t.last = r
}

// sourceVertex is the vertex of build's source, opened on its first event;
// identifier (as asked, or canonical) becomes one of its names.
func (t *tracker) sourceVertex(build, identifier string, at time.Time) *vertex {
	v := t.sources[build]
	if v == nil {
		v = t.open(identifier, at)
		t.sources[build] = v
	}
	if !t.hasName(v, identifier) {
		t.names[v] = append(t.names[v], identifier)
	}
	return v
}

func (t *tracker) hasName(v *vertex, name string) bool {
	for _, n := range t.names[v] {
		if n == name {
			return true
		}
	}
	return false
}

// progressVertex is the vertex a progress event belongs to: the one of the
// cache request that caused it, the build's source when it names the
// source or nothing, else the running vertex of that name, else a new one.
func (t *tracker) progressVertex(e events.Event, p events.Progress) *vertex {
	if r := t.requests[e.CausationID]; r != nil {
		if r.v == nil || r.v.name != p.Vertex {
			r.v = t.open(p.Vertex, r.at)
		}
		return r.v
	}
	src := t.sources[e.BuildID]
	if src != nil && (p.Vertex == "" || t.hasName(src, p.Vertex)) {
		return src
	}
	name := p.Vertex
	if name == "" {
		name = "build " + e.BuildID
	}
	for i := len(t.vertices) - 1; i >= 0; i-- {
		if v := t.vertices[i]; v.name == name && v.result == "" {
			return v
		}
	}
	return t.open(name, e.Time)
}

// requestVertex is the vertex that the end of a cache request ends: the
// one its progress opened, or one named after the request.
func (t *tracker) requestVertex(e events.Event) *vertex {
	r := t.requests[e.CausationID]
	if r == nil && t.last != nil && !t.last.ended {
		r = t.last
	}
	if r == nil {
		name := "cache"
		switch p := e.Data.(type) {
		case events.CacheExported:
			name = "exporting cache to " + p.Target
		case events.CacheImported:
			name = "importing cache manifest from " + p.Source
		}
		r = &request{at: e.Time, name: name}
	}
	r.ended = true
	if r.v == nil {
		r.v = t.open(r.name, r.at)
	}
	return r.v
}

// plainDisplay prints buildctl's plain progress: "#1 <vertex>", then one
// line per status change, then "#1 DONE 1.2s"; a blank line before each
// further block, and "#1 ..." when another vertex interrupts one that runs.
type plainDisplay struct {
	w       io.Writer
	t       *tracker
	current *vertex
	printed bool
}

func (d *plainDisplay) event(e events.Event) {
	s := d.t.add(e)
	if s.vertex == nil {
		return
	}
	if it := s.progress; it != nil {
		p := it.p
		// Byte progress prints at most every megabyte, and always at the end.
		if !it.done && p.Total > 0 && p.Current-it.printed < 1<<20 && it.printed != 0 {
			return
		}
		it.printed = max(p.Current, 1)
		d.focus(s.vertex)
		fmt.Fprintf(d.w, "#%d %s\n", s.vertex.index, statusLine(p, e.Time, it.done))
	} else {
		d.focus(s.vertex)
	}
	if s.ended {
		fmt.Fprintf(d.w, "#%d %s\n", s.vertex.index, resultLine(s.vertex))
		d.current = nil
	}
}

// focus starts v's block unless it is the current one.
func (d *plainDisplay) focus(v *vertex) {
	if d.current == v {
		return
	}
	if d.current != nil && d.current.result == "" {
		fmt.Fprintf(d.w, "#%d ...\n", d.current.index)
	}
	if d.printed {
		fmt.Fprintln(d.w)
	}
	d.printed = true
	fmt.Fprintf(d.w, "#%d %s\n", v.index, v.name)
	d.current = v
}

func (d *plainDisplay) done() {}

// resultLine is how an ended vertex's block ends: "DONE 1.2s", "CACHED"
// or "ERROR: reason".
func resultLine(v *vertex) string {
	if v.result == resultDone {
		return fmt.Sprintf("DONE %.1fs", v.ended.Sub(v.started).Seconds())
	}
	return v.result
}

// statusLine renders one status like buildctl: the ID, bytes, seconds.
func statusLine(p events.Progress, now time.Time, done bool) string {
	var b strings.Builder
	b.WriteString(p.ID)
	if p.Total > 0 {
		fmt.Fprintf(&b, " %s / %s", humanBytes(p.Current), humanBytes(p.Total))
	}
	if p.Started != nil {
		end := now
		if p.Completed != nil {
			end = *p.Completed
		}
		fmt.Fprintf(&b, " %.1fs", end.Sub(*p.Started).Seconds())
	}
	if done {
		b.WriteString(" done")
	}
	if p.Error != "" {
		b.WriteString(" ERROR: " + p.Error)
	}
	return b.String()
}

// humanBytes prints decimal units as buildctl does (1.05MB).
func humanBytes(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "kB", "MB", "GB"} {
		if f < 1000 || u == "GB" {
			if u == "B" {
				return fmt.Sprintf("%dB", n)
			}
			return fmt.Sprintf("%.2f%s", f, u)
		}
		f /= 1000
	}
	return ""
}

// ttyDisplay redraws a block like buildctl's tty mode, one group of lines
// per vertex:
//
//	[+] Pulling 1.2s (3/5)
//	 => importing cache manifest from /tmp/cache 0.0s
//	 => => inferred cache manifest type: application/vnd.oci.image.manifest.v1+json 0.0s done
//	 => docker-image://…
//	 => => sha256:…  1.05MB / 3.62MB 0.4s
type ttyDisplay struct {
	w     io.Writer
	title string
	mu    sync.Mutex
	t     *tracker
	lines int
	last  time.Time
	start time.Time
	// dirty is set while an event changed the block since the last draw.
	dirty bool
}

func newTTYDisplay(w io.Writer, title string) *ttyDisplay {
	return &ttyDisplay{w: w, title: title, t: newTracker(), start: time.Now()}
}

func (d *ttyDisplay) event(e events.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.t.add(e)
	d.dirty = d.dirty || s.vertex != nil
	if time.Since(d.last) >= 100*time.Millisecond || s.ended {
		d.draw()
	}
}

// done draws the last frame unless the block already shows it.
func (d *ttyDisplay) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dirty || d.lines == 0 {
		d.draw()
	}
}

// showedError reports whether the block shows a vertex that failed, with
// its reason.
func (d *ttyDisplay) showedError() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.t.vertices {
		if strings.HasPrefix(v.result, resultError) {
			return true
		}
	}
	return false
}

// frame is the block's lines at now.
func (d *ttyDisplay) frame(now time.Time) []string {
	finished, total := 0, 0
	for _, v := range d.t.vertices {
		for _, it := range v.items {
			total++
			if it.done {
				finished++
			}
		}
	}
	lines := []string{fmt.Sprintf("[+] %s %.1fs (%d/%d)", d.title, now.Sub(d.start).Seconds(), finished, total)}
	for _, v := range d.t.vertices {
		switch {
		case strings.HasPrefix(v.result, resultError):
			lines = append(lines, " => ERROR "+v.name)
		case v.result == resultCached:
			lines = append(lines, " => CACHED "+v.name)
		case v.result == resultDone:
			lines = append(lines, fmt.Sprintf(" => %s %.1fs", v.name, v.ended.Sub(v.started).Seconds()))
		default:
			lines = append(lines, " => "+v.name)
		}
		for _, id := range v.order {
			it := v.items[id]
			lines = append(lines, " => => "+statusLine(it.p, now, it.done))
		}
		if strings.HasPrefix(v.result, resultError) {
			lines = append(lines, v.result)
		}
	}
	return lines
}

func (d *ttyDisplay) draw() {
	d.last, d.dirty = time.Now(), false
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.lines) // back to the top of the block
	}
	lines := d.frame(d.last)
	for _, l := range lines {
		b.WriteString("\x1b[2K") // clear the line
		b.WriteString(l)
		b.WriteByte('\n')
	}
	d.lines = len(lines)
	_, _ = io.WriteString(d.w, b.String())
}
