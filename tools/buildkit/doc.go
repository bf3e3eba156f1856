// Package buildkit pins the BuildKit daemons the builder tests and the
// builder benchmark run: `make builders` builds bin/buildkitd and
// bin/buildctl from github.com/moby/buildkit at the version this module
// requires, the one conformance/ requires. It stays out of the workspace so
// BuildKit's dependency graph never moves the services' versions, and it has
// no code of its own.
package buildkit
