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

// Kind says what went wrong, for classification.
type Kind int

// The kinds.
const (
	// KindUnavailable: the remote could not be reached or broke off (a
	// network error, a 5xx). Retrying may help.
	KindUnavailable Kind = iota
	// KindNotFound: the remote has no such repository, ref or commit.
	KindNotFound
	// KindUnauthorized: the remote wants credentials, or refused them.
	KindUnauthorized
	// KindInvalid: the request can never succeed (an unsupported remote, a
	// malformed commit, a tree that cannot be checked out safely).
	KindInvalid
	// KindUnreachable: nothing listens at the remote's address, or it
	// speaks another protocol (failure.IsUnreachable). Not retried.
	KindUnreachable
)

// Error is a failure to read a remote or check a commit out.
type Error struct {
	// Remote is the repository it was about.
	Remote string
	// Kind classifies it.
	Kind Kind
	// Err is the underlying error; its text is the message.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether retrying may help.
func (e *Error) Temporary() bool { return e.Kind == KindUnavailable }

// Is makes the error match the bus class of its kind, so a service needs
// no mapping of its own.
func (e *Error) Is(target error) bool {
	switch e.Kind {
	case KindNotFound:
		return target == failure.ErrNotFound
	case KindUnauthorized:
		return target == failure.ErrUnauthorized
	case KindInvalid:
		return target == failure.ErrInvalid
	case KindUnreachable:
		return target == failure.ErrUnreachable || target == failure.ErrUnavailable
	}
	return target == failure.ErrUnavailable
}

var _ error = (*Error)(nil)

// ErrUnsupportedRemote marks a remote this package cannot read: not an
// http, https or git URL, or one that carries credentials.
var ErrUnsupportedRemote = errors.New("unsupported git remote")

// newError is an Error of kind with a formatted message.
func newError(remote string, kind Kind, format string, args ...any) error {
	return &Error{Remote: remote, Kind: kind, Err: fmt.Errorf(format, args...)}
}

// remoteError wraps an error of go-git's transport, in BuildKit's words
// ("failed to fetch remote <remote>: …"), and classifies it.
func remoteError(remote string, err error) error {
	e := &Error{Remote: remote, Kind: KindUnavailable, Err: fmt.Errorf("failed to fetch remote %s: %w", remote, err)}
	var netErr net.Error
	switch {
	case errors.Is(err, transport.ErrRepositoryNotFound), errors.Is(err, transport.ErrEmptyRemoteRepository),
		errors.Is(err, git.NoMatchingRefSpecError{}), errors.Is(err, plumbing.ErrObjectNotFound),
		errors.Is(err, plumbing.ErrReferenceNotFound):
		e.Kind = KindNotFound
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod):
		e.Kind = KindUnauthorized
	case failure.IsUnreachable(err), errors.Is(err, syscall.ECONNRESET):
		// A reset before any answer is what a server of another protocol
		// (a git daemon asked over http) does with a request it cannot
		// read.
		e.Kind = KindUnreachable
	case errors.As(err, &netErr):
		e.Kind = KindUnavailable
	}
	return e
}
