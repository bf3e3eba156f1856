package dirsync

import (
	"errors"
	"io/fs"

	"github.com/stevedore-dev/stevedore/pkg/session"
)

// codeOf is the error reply code of a failure to read the served
// directory: not-found for a path that does not exist, invalid for one the
// client may not read (permission denied: retrying cannot help, so the
// build fails at once), internal otherwise.
func codeOf(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return session.CodeNotFound
	case errors.Is(err, fs.ErrPermission):
		return session.CodeInvalid
	}
	return session.CodeInternal
}
