package gitremote

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/stevedore-dev/stevedore/pkg/failure"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Error is a failure to read a remote or check a commit out.
type Error struct {
	// Remote is the repository it was about.
	Remote string
	// Kind is its class.
	Kind failure.Kind
	// Err is the underlying error; its text is the message.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether retrying may help.
func (e *Error) Temporary() bool { return e.Kind.Temporary() }

// Is makes the error match the class of its kind, so a service needs no
// mapping of its own.
func (e *Error) Is(target error) bool { return e.Kind.Is(target) }

var _ error = (*Error)(nil)

// ErrUnsupportedRemote marks a remote this package cannot read: not an
// http, https or git URL, or one that carries credentials.
var ErrUnsupportedRemote = errors.New("unsupported git remote")

// newError is an Error of kind with a formatted message.
func newError(remote string, kind failure.Kind, format string, args ...any) error {
	return &Error{Remote: remote, Kind: kind, Err: fmt.Errorf(format, args...)}
}

// remoteError wraps an error of go-git's transport, in BuildKit's words
// ("failed to fetch remote <remote>: …"), and classifies it.
func remoteError(remote string, err error) error {
	e := &Error{Remote: remote, Kind: failure.KindUnavailable, Err: fmt.Errorf("failed to fetch remote %s: %w", remote, err)}
	var netErr net.Error
	switch {
	case errors.Is(err, transport.ErrRepositoryNotFound), errors.Is(err, transport.ErrEmptyRemoteRepository),
		errors.Is(err, git.NoMatchingRefSpecError{}), errors.Is(err, plumbing.ErrObjectNotFound),
		errors.Is(err, plumbing.ErrReferenceNotFound):
		e.Kind = failure.KindNotFound
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod):
		e.Kind = failure.KindUnauthorized
	case failure.IsUnreachable(err), errors.Is(err, syscall.ECONNRESET):
		// A reset before any answer is what a server of another protocol
		// (a git daemon asked over http) does with a request it cannot
		// read.
		e.Kind = failure.KindUnreachable
	case errors.As(err, &netErr):
		e.Kind = failure.KindUnavailable
	}
	return e
}
