// Package e2e runs Stevedore's compose stack (deploy/compose.yaml) end to
// end against a Docker engine: `make e2e` builds the images, then runs the
// tests of this package, which carry the build tag e2e so that `go test
// ./...` anywhere else never starts containers.
//
// The suite starts the stack under a project name of its own with three
// pullers and three snapshotters, pushes generated images to the stack's
// registry, and checks the stack the way an operator would see it: pull
// waves at one and three replicas (every pull completes; the registry's
// access log shows one GET per blob and per manifest), replicas killed
// mid-pull, NATS restarted mid-build, a poison message dead-lettered, and
// the watcher user's rights. It tears the project down (containers,
// networks, volumes) when it ends, passed or failed, and logs a summary of
// its figures.
//
// cmd/wget is the healthcheck helper of the FROM scratch stand-ins for the
// upstream nats and registry images (images/*.Dockerfile, `make
// stand-ins`).
package e2e
