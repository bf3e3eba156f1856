package failure_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

func TestWrappersKeepTextAndName(t *testing.T) {
	t.Parallel()
	cause := errors.New("failed to parse foo: invalid")
	for _, tc := range []struct {
		err       error
		code      string
		permanent bool
	}{
		{failure.Invalid(cause), "invalid", true},
		{failure.NotFound(cause), "not-found", true},
		{failure.Unauthorized(cause), "unauthorized", true},
		{failure.Unreachable(cause), "unreachable", true},
		{failure.Unavailable(cause), "unavailable", false},
		{failure.Conflict(cause), "unavailable", false},
		{cause, "internal", false},
		{fmt.Errorf("pull x: %w", failure.NotFound(cause)), "not-found", true},
	} {
		if got := failure.Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.code)
		}
		if got := failure.Permanent(tc.err); got != tc.permanent {
			t.Errorf("Permanent(%v) = %v, want %v", tc.err, got, tc.permanent)
		}
		if !errors.Is(tc.err, cause) || !strings.HasSuffix(tc.err.Error(), cause.Error()) {
			t.Errorf("%v does not keep its cause and its text", tc.err)
		}
	}
	if failure.Invalid(nil) != nil {
		t.Error("Invalid(nil) is not nil")
	}
}

// A sentinel of another package made with a wrapper is its own value and
// of its class.
func TestClassedSentinel(t *testing.T) {
	t.Parallel()
	errLimit := failure.Invalid(errors.New("snapshot limit reached"))
	err := fmt.Errorf("layer x: %w", errLimit)
	if !errors.Is(err, errLimit) || !errors.Is(err, failure.ErrInvalid) || errors.Is(err, failure.ErrNotFound) {
		t.Errorf("%v: want errLimit and ErrInvalid only", err)
	}
	if err.Error() != "layer x: snapshot limit reached" {
		t.Errorf("text %q", err)
	}
}

func TestHTTPStatus(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]failure.Kind{
		http.StatusBadRequest:          failure.KindInvalid,
		http.StatusUnauthorized:        failure.KindUnauthorized,
		http.StatusForbidden:           failure.KindUnauthorized,
		http.StatusNotFound:            failure.KindNotFound,
		http.StatusGone:                failure.KindNotFound,
		http.StatusRequestTimeout:      failure.KindUnavailable,
		http.StatusConflict:            failure.KindInvalid,
		http.StatusTooManyRequests:     failure.KindUnavailable,
		http.StatusInternalServerError: failure.KindUnavailable,
		http.StatusServiceUnavailable:  failure.KindUnavailable,
	} {
		if got := failure.HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestKindIs(t *testing.T) {
	t.Parallel()
	classes := []error{failure.ErrUnavailable, failure.ErrNotFound, failure.ErrUnauthorized, failure.ErrInvalid, failure.ErrUnreachable, failure.ErrConflict}
	for _, tc := range []struct {
		kind      failure.Kind
		matches   []error
		temporary bool
	}{
		{failure.KindUnavailable, []error{failure.ErrUnavailable}, true},
		{failure.KindNotFound, []error{failure.ErrNotFound}, false},
		{failure.KindUnauthorized, []error{failure.ErrUnauthorized}, false},
		{failure.KindInvalid, []error{failure.ErrInvalid}, false},
		{failure.KindUnreachable, []error{failure.ErrUnreachable, failure.ErrUnavailable}, false},
	} {
		for _, c := range classes {
			want := false
			for _, m := range tc.matches {
				want = want || errors.Is(m, c)
			}
			if got := tc.kind.Is(c); got != want {
				t.Errorf("Kind %d Is(%v) = %v, want %v", tc.kind, c, got, want)
			}
		}
		if tc.kind.Temporary() != tc.temporary {
			t.Errorf("Kind %d Temporary() = %v", tc.kind, !tc.temporary)
		}
	}
}

func TestNetwork(t *testing.T) {
	t.Parallel()
	refused := fmt.Errorf("dial tcp 127.0.0.1:1: %w", syscall.ECONNREFUSED)
	if got := failure.Code(failure.Network(refused)); got != "unreachable" {
		t.Errorf("Network(connection refused) is %q, want unreachable", got)
	}
	reset := fmt.Errorf("read: %w", syscall.ECONNRESET)
	if got := failure.Code(failure.Network(reset)); got != "unavailable" {
		t.Errorf("Network(connection reset) is %q, want unavailable", got)
	}
}
