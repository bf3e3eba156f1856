// Package bench holds Stevedore's benchmarks. It has no non-test code:
// `make bench` runs `go test -bench` here, and TestMain prints a summary
// with the ratios.
//
//   - warm_test.go: the warm resolve path through the bus, next to the same
//     hops with handlers that do nothing (`make bench-warm`).
//   - pull_test.go: cold pulls of three generated images (images_test.go)
//     by Stevedore, by containerd's ctr against a containerd daemon, and by
//     curl | tar, the floor (`make bench-pull`; needs root and containerd).
//   - export_test.go: the remote cache export of image (a) into an OCI
//     layout by the exporter service, next to `skopeo copy` of the same
//     image into one, and its export to a registry twice, the second
//     uploading nothing (`make bench-export`; needs skopeo).
//
// `make bench-deps` installs what they compare with (containerd, skopeo,
// curl) with apt-get when it is missing and make runs as root on Debian;
// bench-pull and bench-export run it first. A benchmark whose tools are
// missing fails, and says which.
package bench
