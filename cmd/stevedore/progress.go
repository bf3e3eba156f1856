package main

import (
	"fmt"
	"io"
	"os"
	"sort"
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
)

// display renders a build's events as progress.
type display interface {
	// event takes one event of the build.
	event(e events.Event)
	// done ends the display (the last frame of a tty).
	done()
}

// newDisplay returns the display of mode writing to w; auto is tty when w
// is a terminal, plain otherwise.
func newDisplay(mode string, w io.Writer) (display, error) {
	if mode == progressAuto {
		mode = progressPlain
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			mode = progressTTY
		}
	}
	switch mode {
	case progressPlain:
		return &plainDisplay{w: w, items: map[string]*item{}}, nil
	case progressTTY:
		return newTTYDisplay(w), nil
	case progressRawJSON:
		return rawDisplay{w: w}, nil
	}
	return nil, fmt.Errorf("--progress %q: want auto, tty, plain or rawjson", mode)
}

// item is one status line of the build: a progress ID and its last state.
type item struct {
	p       events.Progress
	first   time.Time
	printed int64
	done    bool
}

// vertexState follows the build's one vertex (the source).
type vertexState struct {
	name    string
	started time.Time
	ended   time.Time
	result  string // "DONE", "CACHED" or "ERROR: …"
}

func (v *vertexState) event(e events.Event) {
	if v.started.IsZero() {
		v.started = e.Time
	}
	if src, ok := events.SourceOf(e.Data); ok && v.name == "" {
		v.name = src.Identifier
	}
	switch p := e.Data.(type) {
	case events.CacheHit:
		v.result, v.ended = "CACHED", e.Time
	case events.SnapshotReady:
		v.result, v.ended = "DONE", e.Time
	case events.SourceFailed:
		v.result, v.ended = "ERROR: "+p.Reason, e.Time
	case events.SnapshotFailed:
		v.result, v.ended = "ERROR: "+p.Reason, e.Time
	}
}

// plainDisplay prints buildctl's plain progress: "#1 <vertex>", then one
// line per status change, then "#1 DONE 1.2s".
type plainDisplay struct {
	w      io.Writer
	vertex vertexState
	header bool
	items  map[string]*item
}

func (d *plainDisplay) event(e events.Event) {
	d.vertex.event(e)
	if !d.header && d.vertex.name != "" {
		fmt.Fprintf(d.w, "#1 %s\n", d.vertex.name)
		d.header = true
	}
	if p, ok := e.Data.(events.Progress); ok {
		it := d.items[p.ID]
		if it == nil {
			it = &item{first: e.Time}
			d.items[p.ID] = it
		}
		it.p = p
		done := p.Completed != nil
		// Byte progress prints at most every megabyte, and always at the end.
		if !done && p.Total > 0 && p.Current-it.printed < 1<<20 && it.printed != 0 {
			return
		}
		it.printed = max(p.Current, 1)
		fmt.Fprintf(d.w, "#1 %s\n", statusLine(p, e.Time, done))
	}
	if d.vertex.result != "" {
		if strings.HasPrefix(d.vertex.result, "ERROR") {
			fmt.Fprintf(d.w, "#1 %s\n", d.vertex.result)
		} else if d.vertex.result == "CACHED" {
			fmt.Fprintln(d.w, "#1 CACHED")
		} else {
			fmt.Fprintf(d.w, "#1 DONE %.1fs\n", d.vertex.ended.Sub(d.vertex.started).Seconds())
		}
		d.vertex.result = "" // printed
	}
}

func (d *plainDisplay) done() {}

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

// rawDisplay prints every event as a JSON object.
type rawDisplay struct{ w io.Writer }

func (d rawDisplay) event(e events.Event) { _ = printJSON(d.w, e) }
func (d rawDisplay) done()                {}

// ttyDisplay redraws a block like buildctl's tty mode:
//
//	[+] Pulling 1.2s (3/5)
//	 => docker-image://…                                1.2s
//	 => => sha256:…  1.05MB / 3.62MB                    0.4s
type ttyDisplay struct {
	w      io.Writer
	mu     sync.Mutex
	vertex vertexState
	items  map[string]*item
	order  []string
	lines  int
	last   time.Time
	start  time.Time
}

func newTTYDisplay(w io.Writer) *ttyDisplay {
	return &ttyDisplay{w: w, items: map[string]*item{}, start: time.Now()}
}

func (d *ttyDisplay) event(e events.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vertex.event(e)
	if p, ok := e.Data.(events.Progress); ok {
		it := d.items[p.ID]
		if it == nil {
			it = &item{first: e.Time}
			d.items[p.ID] = it
			d.order = append(d.order, p.ID)
		}
		it.p = p
		it.done = p.Completed != nil
	}
	if time.Since(d.last) >= 100*time.Millisecond || d.vertex.result != "" {
		d.draw()
	}
}

func (d *ttyDisplay) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draw()
}

func (d *ttyDisplay) draw() {
	d.last = time.Now()
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.lines) // back to the top of the block
	}
	finished := 0
	for _, it := range d.items {
		if it.done {
			finished++
		}
	}
	lines := []string{fmt.Sprintf("[+] Pulling %.1fs (%d/%d)", time.Since(d.start).Seconds(), finished, len(d.items))}
	prefix := " => "
	switch {
	case strings.HasPrefix(d.vertex.result, "ERROR"):
		prefix = " => ERROR "
	case d.vertex.result == "CACHED":
		prefix = " => CACHED "
	}
	lines = append(lines, fmt.Sprintf("%s%s", prefix, d.vertex.name))
	ids := append([]string(nil), d.order...)
	sort.SliceStable(ids, func(i, j int) bool { return d.items[ids[i]].first.Before(d.items[ids[j]].first) })
	for _, id := range ids {
		it := d.items[id]
		lines = append(lines, " => => "+statusLine(it.p, time.Now(), it.done))
	}
	if strings.HasPrefix(d.vertex.result, "ERROR") {
		lines = append(lines, d.vertex.result)
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K") // clear the line
		b.WriteString(l)
		b.WriteByte('\n')
	}
	d.lines = len(lines)
	_, _ = io.WriteString(d.w, b.String())
}
