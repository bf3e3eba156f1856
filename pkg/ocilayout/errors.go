package ocilayout

import (
	"errors"
	"fmt"

	digest "github.com/opencontainers/go-digest"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// Sentinels. Every error this package returns for one of these conditions
// wraps the matching sentinel, so callers classify with errors.Is; the
// wrapping text names the file or digest involved. They are not failure
// classes themselves: to a reader of several locations (pkg/blobs) a layout
// without the blob is a reason to try the next one, not the request's
// failure. A caller whose request the layout answers alone says so with
// Classify.
var (
	// ErrNotFound marks something the layout does not hold: a missing layout
	// directory or oci-layout file, an absent blob, or a tag no index entry
	// carries. Writing the thing (or exporting again) is the remedy.
	ErrNotFound = errors.New("not found")
	// ErrInvalid marks input that can never succeed or a layout file that
	// cannot be parsed: a malformed digest, a negative size, an empty tag, an
	// oci-layout file that is not {"imageLayoutVersion":"1.0.0"}, an
	// index.json that is not an image index, or a blob larger than a
	// reader's limit (TooLargeError).
	ErrInvalid = errors.New("invalid")
	// ErrVerify marks content that does not match its descriptor: a blob
	// whose size or digest differs from what the descriptor says, either
	// while it is written (nothing is stored) or when it is read back.
	ErrVerify = errors.New("verification failed")
)

// TooLargeError is returned by ReadBlob for a descriptor whose size exceeds
// the caller's limit. Its text is BuildKit's ("blob <digest> is too large
// (<size> > <max>)") and it matches ErrInvalid with errors.Is.
type TooLargeError struct {
	// Digest is the blob's digest, as the descriptor gives it.
	Digest digest.Digest
	// Size is the size the descriptor claims.
	Size int64
	// Max is the limit the caller passed.
	Max int64
}

var _ error = (*TooLargeError)(nil)

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("blob %s is too large (%d > %d)", e.Digest, e.Size, e.Max)
}

// Is reports that every TooLargeError is an ErrInvalid.
func (e *TooLargeError) Is(target error) bool { return target == ErrInvalid }

// Classify marks err with the failure class of this package's sentinel it
// holds, for a caller whose request the layout answers alone (a cache
// import from a local layout): ErrNotFound is failure.ErrNotFound, ErrInvalid
// and ErrVerify are failure.ErrInvalid. An err that has a class already, or
// holds none of the sentinels, is returned as it is.
func Classify(err error) error {
	switch {
	case err == nil || failure.Code(err) != "internal":
		return err
	case errors.Is(err, ErrNotFound):
		return failure.NotFound(err)
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrVerify):
		return failure.Invalid(err)
	}
	return err
}
