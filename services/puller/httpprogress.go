package puller

import (
	"context"
	"io"
	"time"

	"github.com/stevedore-dev/stevedore/pkg/bus"
	"github.com/stevedore-dev/stevedore/pkg/events"
)

// downloadProgressInterval is the least time between two byte progress
// events of one download (the last one always goes out).
const downloadProgressInterval = 150 * time.Millisecond

// downloadProgress counts what is read through it and emits byte progress
// of a download, as a layer's shows: the URL, bytes so far and the total
// when the server said it.
type downloadProgress struct {
	// emit publishes a progress event of the handler.
	emit    func(events.Payload)
	r       io.Reader
	vertex  string
	id      string
	total   int64
	current int64
	started time.Time
	last    time.Time
}

func newDownloadProgress(ctx context.Context, r io.Reader, vertex, id string, total int64) *downloadProgress {
	now := time.Now()
	return &downloadProgress{emit: func(p events.Payload) { bus.Emit(ctx, p) }, r: r, vertex: vertex, id: id, total: max(total, 0), started: now}
}

func (d *downloadProgress) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.current += int64(n)
	if now := time.Now(); now.Sub(d.last) >= downloadProgressInterval {
		d.last = now
		d.send(nil)
	}
	return n, err
}

// done emits the last progress of the download.
func (d *downloadProgress) done() {
	now := time.Now()
	d.send(&now)
}

func (d *downloadProgress) send(completed *time.Time) {
	started := d.started
	total := d.total
	if completed != nil && total == 0 {
		total = d.current
	}
	d.emit(events.Progress{Vertex: d.vertex, ID: d.id, Action: "downloading",
		Current: d.current, Total: total, Started: &started, Completed: completed})
}
