package cachefmt

import (
	"errors"

	"github.com/stevedore-dev/stevedore/pkg/failure"
)

// ErrInvalid marks a config, manifest or attribute that breaks the
// format's rules. Every error of this package that is about its input
// wraps it; the texts are BuildKit's where it has one. It is of class
// failure.ErrInvalid.
var ErrInvalid = failure.Invalid(errors.New("invalid cache"))

// ErrTooLarge marks a cache manifest or config over MaxBlobSize, which
// BuildKit would refuse to import. It is of class failure.ErrInvalid.
var ErrTooLarge = failure.Invalid(errors.New("cache blob too large"))
