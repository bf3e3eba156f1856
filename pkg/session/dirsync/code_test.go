package dirsync

import (
	"fmt"
	"io/fs"
	"testing"

	"github.com/stevedore-dev/stevedore/pkg/failure"
	"github.com/stevedore-dev/stevedore/pkg/session"
)

func TestCodeOfReadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err       error
		code      string
		permanent bool
	}{
		{fmt.Errorf("open a.txt: %w", fs.ErrPermission), session.CodeInvalid, true},
		{fmt.Errorf("open a.txt: %w", fs.ErrNotExist), session.CodeNotFound, true},
		{fmt.Errorf("read a.txt: input/output error"), session.CodeInternal, false},
	} {
		code := codeOf(tc.err)
		if code != tc.code {
			t.Errorf("codeOf(%v) = %q, want %q", tc.err, code, tc.code)
		}
		// What the reading service gets back is permanent or not as the
		// bus sees it.
		if got := failure.Permanent(session.Errorf(code, tc.err.Error())); got != tc.permanent {
			t.Errorf("reply of %v: permanent = %v, want %v", tc.err, got, tc.permanent)
		}
	}
}
