package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"google.golang.org/grpc"
)

// SnapshotsServer serves containerd's snapshots API
// (containerd.services.snapshots.v1.Snapshots) on a unix socket: what
// buildkitd's proxy snapshotter and containerd's proxy_plugins connect to.
type SnapshotsServer struct {
	path string
	srv  *grpc.Server
	done chan error
}

// SocketOption configures ListenSnapshots.
type SocketOption func(*socketOptions) error

type socketOptions struct {
	gid int // -1: none
}

// WithSocketGroup lets the members of group (a name or a numeric id) use
// the socket: mode 0660, owned by that group. The default is none: mode
// 0600, the socket's owner (root) only.
func WithSocketGroup(group string) SocketOption {
	return func(o *socketOptions) error {
		if group == "" {
			return nil
		}
		if gid, err := strconv.Atoi(group); err == nil {
			o.gid = gid
			return nil
		}
		g, err := user.LookupGroup(group)
		if err != nil {
			return fmt.Errorf("snapshots socket group: %w", err)
		}
		o.gid, err = strconv.Atoi(g.Gid)
		return err
	}
}

func makeSocketOptions(opts []SocketOption) (socketOptions, error) {
	o := socketOptions{gid: -1}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// ListenSnapshots serves sn's snapshots API on the unix socket path until
// Close. A socket file left at path by a process that died is removed
// first; any other file there is an error. The socket's mode is 0600
// (0660 with WithSocketGroup); its directory is created when missing.
func ListenSnapshots(_ context.Context, sn snapshots.Snapshotter, path string, opts ...SocketOption) (*SnapshotsServer, error) {
	o, err := makeSocketOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { //nolint:gosec // G301: the socket's own mode guards it
		return nil, fmt.Errorf("snapshots socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("snapshots socket %s: a file that is not a socket is in the way", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("snapshots socket: remove stale %s: %w", path, err)
		}
	}
	// Listen on a temporary name, set the mode, then rename into place:
	// the socket appears at path only once it accepts connections, and
	// never with a wider mode.
	tmp := path + ".new"
	_ = os.Remove(tmp)
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("snapshots socket: %w", err)
	}
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // Close removes path itself
	}
	fail := func(err error) (*SnapshotsServer, error) {
		_ = l.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("snapshots socket %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if o.gid >= 0 {
		mode = 0o660
		if err := os.Chown(tmp, os.Getuid(), o.gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	s := &SnapshotsServer{path: path, srv: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(l) }()
	return s, nil
}

// Path is the socket's path.
func (s *SnapshotsServer) Path() string { return s.path }

// Close stops serving (calls in flight are cut short) and removes the
// socket file.
func (s *SnapshotsServer) Close() error {
	s.srv.Stop()
	err := <-s.done
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}
