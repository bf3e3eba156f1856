// Package bench holds Stevedore's benchmarks. It has no non-test code:
// `make bench` runs `go test -bench` here, and TestMain prints a summary
// with the ratios.
//
//   - warm_test.go: the warm resolve path through the bus, next to the same
//     hops with handlers that do nothing (`make bench-warm`).
//   - pull_test.go: cold pulls of three generated images (images_test.go)
//     by Stevedore, by containerd's ctr against a containerd daemon, and by
//     curl | tar, the floor (`make bench-pull`; needs root and containerd).
package bench
