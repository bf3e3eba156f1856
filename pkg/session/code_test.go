package session

import (
	"fmt"
	"io/fs"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

func TestCodeOfReadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err       error
		code      string
		permanent bool
	}{
		{fmt.Errorf("open a.txt: %w", fs.ErrPermission), CodeInvalid, true},
		{fmt.Errorf("open a.txt: %w", fs.ErrNotExist), CodeNotFound, true},
		{fmt.Errorf("read a.txt: input/output error"), CodeInternal, false},
	} {
		code := codeOf(tc.err)
		if code != tc.code {
			t.Errorf("codeOf(%v) = %q, want %q", tc.err, code, tc.code)
		}
		// What the reading service gets back is permanent or not as the
		// bus sees it.
		if got := failure.Permanent(Errorf(code, tc.err.Error())); got != tc.permanent {
			t.Errorf("reply of %v: permanent = %v, want %v", tc.err, got, tc.permanent)
		}
	}
}
