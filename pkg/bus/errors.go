package bus

import (
	"errors"
	"time"
)

// Error classes. A handler classifies each error once, with the wrappers
// below, at the boundary where it knows what the error means; Action is the
// one function that turns a class into a JetStream acknowledgement.
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

// Verdict is what the runtime does with a message whose handler returned an
// error.
type Verdict struct {
	// Retry is true when the message goes back with NakWithDelay(Delay);
	// false when the runtime emits a failed event and terminates it.
	Retry bool
	// Delay is the redelivery delay when Retry is set.
	Delay time.Duration
}

// Action maps a handler error and the delivery count (1 for the first
// delivery) to a Verdict. Permanent classes terminate at once; every other
// error (unclassified ones included: a transient cause is the safer guess)
// is retried with backoff until the delivery count reaches maxDeliver.
func Action(err error, delivered, maxDeliver int, backoff func(int) time.Duration) Verdict {
	if Permanent(err) || (maxDeliver > 0 && delivered >= maxDeliver) {
		return Verdict{}
	}
	return Verdict{Retry: true, Delay: backoff(delivered)}
}
