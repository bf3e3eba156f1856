package session

import (
	"errors"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Sentinels of the session protocol. The classes of pkg/failure say the
// rest: an error this package returns for a store, blob, directory or
// secret a session does not have matches failure.ErrNotFound, and one for
// a request that can never succeed (a malformed session id, store or
// digest, a range outside the blob, a blob larger than a caller's limit)
// matches failure.ErrInvalid, so services classify session errors without
// a mapping of their own.
var (
	// ErrNoSession marks a session that does not answer: nobody serves its
	// subjects (the client disconnected or stopped serving) or a request
	// timed out. It is *NoSessionError's, and matches failure.ErrNotFound:
	// a build that needs a gone session cannot succeed.
	ErrNoSession = errors.New("no active session")
	// ErrVerify marks content that does not match its descriptor: a size
	// other than the descriptor's, or, at the end of a read, another
	// digest. It matches failure.ErrInvalid.
	ErrVerify = errors.New("verification failed")
)

// NoSessionError is ErrNoSession for one session. Its text is BuildKit's,
// `no active session for <id>`.
type NoSessionError struct {
	// ID is the session's id.
	ID string
	// Cause is what showed it gone: nats.ErrNoResponders, or the timeout.
	Cause error
}

var _ error = (*NoSessionError)(nil)

func (e *NoSessionError) Error() string { return "no active session for " + e.ID }

// Unwrap returns the cause.
func (e *NoSessionError) Unwrap() error { return e.Cause }

// Is matches ErrNoSession and failure.ErrNotFound.
func (e *NoSessionError) Is(target error) bool {
	return target == ErrNoSession || target == failure.ErrNotFound
}

// Codes of an error reply, as its HeaderError carries them: the class of
// the error the reader returns (Errorf).
const (
	// CodeNotFound is failure.ErrNotFound's code.
	CodeNotFound = "not-found"
	// CodeInvalid is failure.ErrInvalid's code.
	CodeInvalid = "invalid"
	// CodeVerify is ErrVerify's code; sessions never reply with it.
	CodeVerify = "verify"
	// CodeInternal is a failure of the serving side (a read error): no
	// class, retrying may help.
	CodeInternal = "internal"
	// CodeNoSession is the answer of a session to a request for a build
	// it does not serve: the reader sees *NoSessionError, as if nothing
	// served the session.
	CodeNoSession = "no-session"
)

// Errorf returns an error with text msg of the class code names:
// failure.ErrNotFound for CodeNotFound, failure.ErrInvalid for
// CodeInvalid, ErrVerify (and failure.ErrInvalid) for CodeVerify, none for
// any other. It is how a reader turns an error reply into an error, and
// how a protocol states the error it replies with (ErrorReply).
func Errorf(code, msg string) error {
	err := errors.New(msg)
	switch code {
	case CodeNotFound:
		return failure.NotFound(err)
	case CodeInvalid:
		return failure.Invalid(err)
	case CodeVerify:
		return failure.Invalid(&verifyError{err})
	}
	return &codeError{code: code, err: err}
}

func errorf(code, msg string) error { return Errorf(code, msg) }

// verifyError is ErrVerify keeping its text.
type verifyError struct{ err error }

func (e *verifyError) Error() string        { return e.err.Error() }
func (e *verifyError) Is(target error) bool { return target == ErrVerify }

// codeError is an error of no class that keeps the code it was made with,
// so that a reply carries it on (CodeNoSession, a code of a newer session).
type codeError struct {
	code string
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }

// CodeOf is the code of the error reply that carries err: CodeNotFound
// and CodeInvalid for the classes, CodeVerify for ErrVerify, the code
// Errorf was given for an error of no class, CodeInternal otherwise.
func CodeOf(err error) string {
	var ce *codeError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, ErrVerify):
		return CodeVerify
	case errors.Is(err, failure.ErrInvalid):
		return CodeInvalid
	case errors.Is(err, failure.ErrNotFound) && !errors.Is(err, ErrNoSession):
		return CodeNotFound
	}
	return CodeInternal
}
