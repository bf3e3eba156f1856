package gitremote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/go-git/go-git/v5/plumbing/protocol/packp"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// ProbeTimeout bounds the wait for a git:// remote's first bytes. A git
// daemon answers a request at once, and so does an http server given the
// probe's newline. A remote still silent after it is left to go-git's
// listing and its ListTimeout (a slow daemon is not a wrong protocol).
const ProbeTimeout = 5 * time.Second

// probeGitDaemon asks a git:// remote for its advertisement and reads its
// first bytes, so a server that does not speak git's protocol fails at once
// with failure.KindUnreachable, saying what it is. The request ends with a flush
// (a git daemon's upload-pack then exits cleanly, wanting nothing) and a
// newline, which makes an http server answer the line as a malformed
// request instead of waiting for the rest of it.
func probeGitDaemon(ctx context.Context, remote string) error {
	u, err := url.Parse(remote)
	if err != nil {
		return unsupported(remote, "git remote %q: not an http, https or git URL", remote)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "9418")
	}
	conn, err := (&net.Dialer{Timeout: ProbeTimeout}).DialContext(ctx, "tcp", host)
	if err != nil {
		return remoteError(remote, err)
	}
	defer func() { _ = conn.Close() }()
	deadline := time.Now().Add(ProbeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return remoteError(remote, err)
	}
	req := packp.GitProtoRequest{RequestCommand: "git-upload-pack", Pathname: u.Path, Host: u.Host}
	var buf bytes.Buffer
	if err := req.Encode(&buf); err != nil {
		return newError(remote, failure.KindInvalid, "git remote %s: %w", remote, err)
	}
	buf.WriteString("0000\n")
	if _, err := conn.Write(buf.Bytes()); err != nil {
		return remoteError(remote, err)
	}
	head := make([]byte, 8)
	n, err := io.ReadFull(conn, head)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("HTTP/")):
		return newError(remote, failure.KindUnreachable, "failed to fetch remote %s: the server speaks http, not git's protocol (use an http:// or https:// URL)", remote)
	case n >= 4 && isPktLen(head[:4]):
		return nil
	case n > 0:
		return newError(remote, failure.KindUnreachable, "failed to fetch remote %s: the server's answer %q is not git's protocol", remote, head)
	case errors.Is(err, io.EOF):
		// The daemon closed without a word: go-git says why (it reads
		// the same close as a missing repository).
		return nil
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() && context.Cause(ctx) == nil {
		return nil // silent so far: go-git's listing waits longer
	}
	return remoteError(remote, err)
}

// isPktLen reports whether b is a pkt-line's four hex digits of length.
func isPktLen(b []byte) bool {
	if len(b) != 4 {
		return false
	}
	_, err := strconv.ParseUint(string(b), 16, 16)
	return err == nil
}
