// Package buildertest runs the real builders against a snapshots socket, for
// tests and benchmarks: buildkitd (its OCI worker on a proxy snapshotter),
// containerd (a proxy_plugins snapshotter) and Stevedore itself
// (`stevedore up --snapshots-socket`), each with fresh temporary roots, and
// builds small images for them in an in-test registry.
//
// # Vocabulary
//
//   - Require checks what a builder test needs (root, a tool on PATH or in
//     the repository's bin/). Without it the test is skipped, saying why,
//     unless the environment variable CI is set: then it fails.
//   - A Process is a daemon a test started. It is stopped by its pid
//     (SIGTERM, then SIGKILL after a grace period) when the test ends, and
//     its log is kept in the test's temporary directory and printed when the
//     test failed.
//   - A Buildkitd is a buildkitd with its own root and socket; Build runs
//     buildctl against it with the dockerfile.v0 frontend (built in: no
//     frontend image is pulled). WithProxySnapshotter puts its OCI worker on
//     a snapshots socket under the name "stargz", the only name for which
//     BuildKit asks for remote snapshots.
//   - A Containerd is a containerd daemon with its own root, state and
//     socket and a proxy snapshotter named "stevedore"; Ctr runs ctr
//     against it.
//   - ServeOverlay serves a plain containerd overlayfs snapshotter (no
//     remote snapshots) through containerd's contrib/snapshotservice: the
//     baseline a proxy snapshotter is compared with.
//   - Stevedore runs `stevedore up` built from this workspace with a
//     snapshots socket.
//   - An Image is a small image pushed to a registrytest.Registry: layers
//     of files given by the test, plus (CopyTool) a static executable of ours,
//     since the images have no shell for RUN.
//
// # Lifecycle
//
// Everything a function starts is stopped with t.Cleanup, in reverse order,
// by pid; nothing else on the machine is touched. Sockets live in short
// directories under os.TempDir (a unix socket path has at most 107 bytes).
package buildertest
