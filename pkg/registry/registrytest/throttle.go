package registrytest

import (
	"net/http"
	"time"
)

// ThrottleBlobs makes blob downloads (GET /v2/<repo>/blobs/<digest>) send
// at most bytesPerSecond, in 4 KiB chunks, so a test can act while a client
// is in the middle of a blob. Zero turns throttling off.
func (r *Registry) ThrottleBlobs(bytesPerSecond int) {
	r.mu.Lock()
	r.throttle = bytesPerSecond
	r.mu.Unlock()
}

// throttledWriter paces the body it writes.
type throttledWriter struct {
	http.ResponseWriter
	rate int
	// done is closed when the client has gone: the writer stops pacing.
	done <-chan struct{}
}

func (w *throttledWriter) Write(p []byte) (int, error) {
	const chunk = 4 << 10
	written := 0
	for len(p) > 0 {
		n := min(chunk, len(p))
		m, err := w.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		_ = http.NewResponseController(w.ResponseWriter).Flush()
		select {
		case <-time.After(time.Duration(n) * time.Second / time.Duration(w.rate)):
		case <-w.done:
			return written, http.ErrAbortHandler
		}
		p = p[n:]
	}
	return written, nil
}
