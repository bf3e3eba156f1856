package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
)

// gunzipCommand is the program that decompresses gzip layers in a process
// of its own: igzip (ISA-L's) when the node has it, unless
// CONTAINERD_DISABLE_IGZIP says no, as containerd's archive package picks
// it; empty: Go's gzip decompresses in this process. Unlike containerd,
// unpigz is not used: fed and read through pipes it costs more CPU than
// Go's decompression (docs/dev/snapshots.md has the figures), and no less
// wall time.
var gunzipCommand = sync.OnceValue(func() string {
	if off, _ := strconv.ParseBool(os.Getenv("CONTAINERD_DISABLE_IGZIP")); off {
		return ""
	}
	path, err := exec.LookPath("igzip")
	if err != nil {
		return ""
	}
	return path
})

// gunzipPipeSize is the capacity asked of the pipes to and from the
// decompressor: the default 64 KiB makes a write or read of each 64 KiB
// and a switch between the processes.
const gunzipPipeSize = 1 << 20

// gunzipStream is the output of a decompressor process, read from its own
// pipe: its input is written by a goroutine of ours (feed) into the other.
// No goroutine of os/exec copies between the process and the caller, as
// it does when the process's input and output are not files (containerd's
// compression.DecompressStream: two more copies of every byte through
// 32 KiB buffers and two pipes).
type gunzipStream struct {
	out    *os.File // the process's stdout, read end
	in     *os.File // the process's stdin, write end
	cmd    *exec.Cmd
	stderr bytes.Buffer
	fed    chan struct{}
	feed   feedWriter

	waitOnce  sync.Once
	waitErr   error
	closeOnce sync.Once
}

// feedWriter writes into the process's stdin and keeps its write error:
// any other error of the feeding is the input's.
type feedWriter struct {
	f   *os.File
	err error
}

func (w *feedWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// startGunzip starts path decompressing what it reads from rd; ctx ending
// kills the process. Once the stream is closed, nothing reads rd.
func startGunzip(ctx context.Context, path string, rd io.Reader) (_ *gunzipStream, err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_, _ = inR.Close(), inW.Close()
		return nil, err
	}
	setPipeSize(inW, gunzipPipeSize)
	setPipeSize(outR, gunzipPipeSize)
	s := &gunzipStream{out: outR, in: inW, fed: make(chan struct{}), feed: feedWriter{f: inW}}
	s.cmd = exec.CommandContext(ctx, path, "-d", "-c")
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = inR, outW, &s.stderr
	err = s.cmd.Start()
	// The process has its own copies of these ends (or none, failing).
	_, _ = inR.Close(), outW.Close()
	if err != nil {
		_, _ = inW.Close(), outR.Close()
		return nil, err
	}
	go func() {
		defer close(s.fed)
		_, err := io.Copy(&s.feed, rd)
		if s.feed.err == nil {
			s.feed.err = err // the input's error (nil: its end)
		} else {
			s.feed.err = nil // the process stopped reading: its exit says why
			// (or Close did: the stream is no longer read)
		}
		_ = s.in.Close() // the end of the process's input
	}()
	return s, nil
}

// Read reads the decompressed stream; at its end, the feeding's error or
// the process's failure, if any, rather than io.EOF.
func (s *gunzipStream) Read(p []byte) (int, error) {
	n, err := s.out.Read(p)
	if err == io.EOF {
		if werr := s.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// wait waits for the feeding and the process once they are done.
func (s *gunzipStream) wait() error {
	s.waitOnce.Do(func() {
		<-s.fed
		err := s.cmd.Wait()
		switch {
		case s.feed.err != nil:
			s.waitErr = fmt.Errorf("gzip input: %w", s.feed.err)
		case err != nil:
			s.waitErr = fmt.Errorf("gzip: %s: %w: %s", s.cmd.Path, err, bytes.TrimSpace(s.stderr.Bytes()))
		}
	})
	return s.waitErr
}

// Close ends the process and the feeding and waits for both: no goroutine
// reads the input once it returns.
func (s *gunzipStream) Close() error {
	s.closeOnce.Do(func() {
		_ = s.out.Close()
		_ = s.in.Close() // a write of the feeding in progress ends
		_ = s.cmd.Process.Kill()
		_ = s.wait()
	})
	return nil
}
