package source

import (
	"errors"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Sentinels. ErrInvalid and ErrNotFound are failure's classes themselves,
// whose texts are BuildKit's, so wrapped errors print exactly as
// BuildKit's do ("failed to parse foo: invalid", "unknown scheme foo: not
// found") and a service needs no mapping of its own.
var (
	// ErrInvalid marks an identifier or attribute that cannot be parsed:
	// failure.ErrInvalid.
	ErrInvalid = failure.ErrInvalid
	// ErrNotFound marks an identifier whose scheme is unknown, or a git ref
	// that does not exist: failure.ErrNotFound.
	ErrNotFound = failure.ErrNotFound
	// ErrNoHandler marks a known scheme that no handler is registered for.
	ErrNoHandler = errors.New("no handler")
)

// Error is a bad-input error whose text is exactly BuildKit's message but
// which still matches ErrInvalid with errors.Is, so callers can classify
// it without changing what the user reads.
type Error struct {
	// Msg is the message, worded as BuildKit words it.
	Msg string
	// Err is an underlying cause, if any; it is not part of Msg.
	Err error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports that every Error is an ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

var _ error = (*Error)(nil)

// invalid returns an *Error with BuildKit's message msg. When cause is not
// nil its text is appended after ": ", as BuildKit's errors.Wrap does.
func invalid(msg string, cause error) error {
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return &Error{Msg: msg, Err: cause}
}

// invalidCause returns an *Error whose message is cause's own text, for the
// places where BuildKit returns a library's error (strconv, encoding/json,
// net/url, go-digest, containerd's reference) without context.
func invalidCause(cause error) error {
	return &Error{Msg: cause.Error(), Err: cause}
}
