package session

import (
	"errors"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Sentinels. Every error this package returns for one of these conditions
// matches the sentinel with errors.Is, and the bus class named with it, so
// services classify session errors without a mapping of their own.
var (
	// ErrNoSession marks a session that does not answer: nobody serves its
	// subjects (the client disconnected or stopped serving) or a request
	// timed out. It is *NoSessionError's, and matches failure.ErrNotFound:
	// a build that needs a gone session cannot succeed.
	ErrNoSession = errors.New("no active session")
	// ErrNotFound marks a store the session does not serve, or a blob its
	// store does not hold. It matches failure.ErrNotFound.
	ErrNotFound = errors.New("not found")
	// ErrInvalid marks a request that can never succeed: a malformed
	// session id, store or digest, a range outside the blob, a blob larger
	// than a caller's limit. It matches failure.ErrInvalid.
	ErrInvalid = errors.New("invalid")
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

// Error is an error with a class: the sentinels above (and their bus
// classes) match it with errors.Is. An error a session replies with is
// one, with the session's message.
type Error struct {
	// Code is the class: CodeNotFound, CodeInvalid, CodeVerify or
	// CodeInternal (no class: retrying may help).
	Code string
	// Msg is the text.
	Msg string
}

var _ error = (*Error)(nil)

func (e *Error) Error() string { return e.Msg }

// Is matches the sentinel and the bus class of the code.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == ErrNotFound || target == failure.ErrNotFound
	case CodeInvalid:
		return target == ErrInvalid || target == failure.ErrInvalid
	case CodeVerify:
		return target == ErrVerify || target == failure.ErrInvalid
	}
	return false
}

// Codes of an Error, as an error reply's HeaderError carries them.
const (
	// CodeNotFound is ErrNotFound's code.
	CodeNotFound = "not-found"
	// CodeInvalid is ErrInvalid's code.
	CodeInvalid = "invalid"
	// CodeVerify is ErrVerify's code; sessions never reply with it.
	CodeVerify = "verify"
	// CodeInternal is a failure of the serving side (a read error).
	CodeInternal = "internal"
	// CodeNoSession is the answer of a session to a request for a build
	// it does not serve: the reader sees *NoSessionError, as if nothing
	// served the session.
	CodeNoSession = "no-session"
)

func errorf(code, msg string) error { return &Error{Code: code, Msg: msg} }
