// Package failure is Stevedore's one error vocabulary: the classes every
// package marks its errors with, at the boundary where it knows what the
// error means, and that the bus alone turns into an acknowledgement
// (pkg/bus Action: a permanent class terminates the message with a failed
// event, any other is retried with backoff). No service maps errors of its
// own.
//
// The classes are sentinels, tested with errors.Is: ErrInvalid,
// ErrNotFound, ErrUnauthorized and ErrUnreachable are permanent,
// ErrUnavailable and ErrConflict are retried, and an error of no class is
// retried too. Code names the class in a failed event ("invalid",
// "not-found", …). A class is given in one of three ways, each keeping the
// error's text so a failed event carries the original message (BuildKit's
// wording):
//
//   - a wrapper (Invalid, NotFound, Unauthorized, Unavailable, Conflict,
//     Unreachable), also for a package's own sentinel
//     (var ErrLimit = failure.Invalid(errors.New("snapshot limit reached")));
//   - a structured error's Is method that asks its Kind (registry.Error,
//     gitremote.Error), whose kind an HTTP status gets from HTTPStatus, the
//     one place a status becomes a class;
//   - Network, for a request that got no answer: ErrUnreachable when
//     nothing listens or another protocol answered (IsUnreachable),
//     ErrUnavailable otherwise.
//
// Who classifies: the package that calls the foreign library (pkg/registry
// for containerd's resolver, pkg/gitremote for go-git, pkg/source for http
// statuses, pkg/snapshot, pkg/image and pkg/cachefmt for their sentinels,
// pkg/session for its wire codes). pkg/ocilayout's sentinels are not
// classes, since a layout without a blob is often one location of several;
// a caller whose request one layout answers calls ocilayout.Classify.
//
// The package is a leaf: it imports only the standard library (its
// TestFailureIsALeaf), so a domain package classifies its errors without
// depending on the bus or NATS (TestDomainDependencies, and the linter's
// depguard rule "domain").
package failure

import "errors"

// Error classes. A handler classifies each error once, with the wrappers
// below, at the boundary where it knows what the error means; pkg/bus Action
// is the one function that turns a class into a JetStream acknowledgement.
var (
	// ErrInvalid: the input can never succeed (bad identifier, bad attribute,
	// checksum mismatch, layer limit too large, undecodable event). Permanent.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound: what the input names does not exist (registry 404).
	// Permanent.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials (401, 403).
	// Permanent: retrying with the same credentials cannot help.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnavailable: something the step needs is down or overloaded
	// (registry 5xx or 429, network error, NATS timeout). Retryable.
	ErrUnavailable = errors.New("unavailable")
	// ErrConflict: another worker holds the lease for this work. Retryable
	// soon.
	ErrConflict = errors.New("conflict")
	// ErrUnreachable: nothing listens at the address (connection refused)
	// or what answers speaks another protocol (plain http to an https
	// client, not git to a git client). Permanent: retrying the same
	// address cannot help, so the build fails at once and says so. An
	// error of this class may also match ErrUnavailable.
	ErrUnreachable = errors.New("unreachable")
)

// classified attaches a class to an error without changing its text, so a
// failure event carries the original message (BuildKit's wording).
type classified struct {
	class error
	err   error
}

func (c *classified) Error() string { return c.err.Error() }
func (c *classified) Unwrap() error { return c.err }

// Is matches the attached class as well as anything the wrapped error matches.
func (c *classified) Is(target error) bool { return target == c.class }

func classify(class, err error) error {
	if err == nil {
		return nil
	}
	return &classified{class: class, err: err}
}

// Invalid marks err as ErrInvalid, keeping its text.
func Invalid(err error) error { return classify(ErrInvalid, err) }

// NotFound marks err as ErrNotFound, keeping its text.
func NotFound(err error) error { return classify(ErrNotFound, err) }

// Unauthorized marks err as ErrUnauthorized, keeping its text.
func Unauthorized(err error) error { return classify(ErrUnauthorized, err) }

// Unavailable marks err as ErrUnavailable, keeping its text.
func Unavailable(err error) error { return classify(ErrUnavailable, err) }

// Conflict marks err as ErrConflict, keeping its text.
func Conflict(err error) error { return classify(ErrConflict, err) }

// Unreachable marks err as ErrUnreachable, keeping its text.
func Unreachable(err error) error { return classify(ErrUnreachable, err) }

// Permanent reports whether err belongs to a class that retrying cannot fix.
func Permanent(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) ||
		errors.Is(err, ErrUnreachable)
}

// Code is the failure code a failed event carries for err: "invalid",
// "not-found", "unauthorized", "unreachable", "unavailable", or "internal" for an error
// nobody classified.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrNotFound):
		return "not-found"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrUnreachable):
		return "unreachable"
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrConflict):
		return "unavailable"
	}
	return "internal"
}
