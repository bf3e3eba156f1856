package failure

import "net/http"

// Kind is a class as a value, for a structured error that keeps its class
// in a field (registry.Error, gitremote.Error) and answers errors.Is with
// Kind.Is, so the error matches its class without a wrapper. The zero Kind
// is KindUnavailable: what nobody could place is worth retrying.
type Kind int

// The kinds, one per class.
const (
	// KindUnavailable matches ErrUnavailable: a 5xx, 408 or 429, a network
	// error, a timeout. Retrying may help.
	KindUnavailable Kind = iota
	// KindNotFound matches ErrNotFound: no such repository, manifest, ref
	// or commit (404, 410).
	KindNotFound
	// KindUnauthorized matches ErrUnauthorized: credentials wanted or
	// refused (401, 403).
	KindUnauthorized
	// KindInvalid matches ErrInvalid: the request can never succeed (any
	// other 4xx, unusable content, a malformed request).
	KindInvalid
	// KindUnreachable matches ErrUnreachable, and ErrUnavailable as well:
	// nothing listens at the address, or it speaks another protocol
	// (IsUnreachable). Not retried.
	KindUnreachable
)

// Class is the sentinel of k: ErrUnavailable, ErrNotFound, ErrUnauthorized,
// ErrInvalid or ErrUnreachable.
func (k Kind) Class() error {
	switch k {
	case KindNotFound:
		return ErrNotFound
	case KindUnauthorized:
		return ErrUnauthorized
	case KindInvalid:
		return ErrInvalid
	case KindUnreachable:
		return ErrUnreachable
	}
	return ErrUnavailable
}

// Is reports whether an error of kind k matches target in errors.Is: k's
// class, and for KindUnreachable ErrUnavailable too.
func (k Kind) Is(target error) bool {
	return target == k.Class() || (k == KindUnreachable && target == ErrUnavailable)
}

// Temporary reports whether retrying may help: true for KindUnavailable
// only.
func (k Kind) Temporary() bool { return k == KindUnavailable }

// HTTPStatus is the kind of an HTTP response whose status code is outside
// 200–399, the one place a status becomes a class: KindUnauthorized for
// 401 and 403, KindNotFound for 404 and 410, KindUnavailable for 408, 429
// and 5xx, KindInvalid for any other.
func HTTPStatus(code int) Kind {
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return KindUnauthorized
	case code == http.StatusNotFound || code == http.StatusGone:
		return KindNotFound
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return KindUnavailable
	}
	return KindInvalid
}

// Network classifies the error of a request that got no answer (a failed
// dial, a broken connection): ErrUnreachable when IsUnreachable says
// nothing listens or another protocol answered, ErrUnavailable otherwise.
func Network(err error) error {
	if IsUnreachable(err) {
		return Unreachable(err)
	}
	return Unavailable(err)
}
