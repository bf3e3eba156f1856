package cachefmt

import "errors"

// ErrInvalid marks a config, manifest or attribute that breaks the
// format's rules. Every error of this package that is about its input
// wraps it; the texts are BuildKit's where it has one.
var ErrInvalid = errors.New("invalid cache")

// ErrTooLarge marks a cache manifest or config over MaxBlobSize, which
// BuildKit would refuse to import.
var ErrTooLarge = errors.New("cache blob too large")
