package events

import "errors"

// Sentinel errors. Decode and the validators wrap them with %w, so callers
// test with errors.Is.
var (
	// ErrInvalid marks a message or value that does not follow the catalog:
	// a missing required attribute, a bad build id, a payload that is not
	// the type's JSON.
	ErrInvalid = errors.New("invalid event")
	// ErrUnknownType marks a well-formed CloudEvent whose type is not in the
	// catalog (for example a newer version than this build knows).
	ErrUnknownType = errors.New("unknown event type")
)
