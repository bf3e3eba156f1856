package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// TestAuthSecretHeader checks each form against values written out by
// hand (the git token's base64 from `printf 'x-access-token:s3cr3t' |
// base64`).
func TestAuthSecretHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		form, want string
		ok         bool
	}{
		{events.AuthFormHeader, "s3cr3t", true},
		{events.AuthFormGitToken, "basic eC1hY2Nlc3MtdG9rZW46czNjcjN0", true},
		{events.AuthFormBearer, "Bearer s3cr3t", true},
		{"basic", "", false},
		{"", "", false},
	} {
		got, ok := events.AuthSecret{Name: "N", Form: tc.form}.Header([]byte("s3cr3t"))
		if got != tc.want || ok != tc.ok {
			t.Errorf("form %q: Header = %q, %v; want %q, %v", tc.form, got, ok, tc.want, tc.ok)
		}
	}
}

// A session id is one subject token: a "." would reach another session's
// subjects, a wildcard every session's.
func TestValidateSessionID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "Sess_1-x", strings.Repeat("s", events.MaxSessionIDLen)} {
		if err := events.ValidateSessionID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "*", ">", "a b", "ü", strings.Repeat("s", events.MaxSessionIDLen+1)} {
		if err := events.ValidateSessionID(bad); !errors.Is(err, events.ErrInvalid) || !strings.HasPrefix(err.Error(), "session id ") {
			t.Errorf("%q: %v; want invalid", bad, err)
		}
	}
}
