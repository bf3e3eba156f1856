// Package conformance checks Stevedore's BuildKit remote cache format
// (pkg/cachefmt) against BuildKit's own code, github.com/moby/buildkit
// v0.34.1: the importer's cacheimport.Parse, the exporter's
// CacheChains.Marshal and its manifest (remotecache.ExportableCache).
//
// # Vocabulary
//
//   - Remarshal is BuildKit reading a config and writing it again: Parse
//     into BuildKit's CacheChains, with the manifest's layers as the
//     descriptor provider, then Marshal and encoding/json. For a config
//     cachefmt wrote, BuildKit's bytes are the reference: a cache whose
//     config BuildKit would write differently gets a different digest
//     from BuildKit than from Stevedore.
//   - Validate is BuildKit's Parse alone, for its verdict and error text.
//   - A tie is one blob on top of two different parents. BuildKit's
//     sortConfig orders layers by blob and then by the parent's index
//     before sorting, that is by the order the chains were walked in, and
//     Marshal walks its records in map order: for a config with a tie,
//     BuildKit writes one of several byte sequences that differ only in
//     the order of the tied layers (and the indexes that point at them).
//     The tests compare BuildKit's output for such configs up to that
//     order; cachefmt breaks the tie by the parents' whole chains, so its
//     own bytes never depend on the order records were added.
//
// # What is checked
//
// sources_test.go checks the keys pkg/source computes without the network
// against the keys BuildKit's own sources compute for the same
// identifiers: local (local.NewSource), docker-image+blob and
// oci-layout+blob (containerblob), http with http.checksum.
//
// The keys that need the network are checked end to end: a fleet's puller
// (fleettest) and BuildKit's own source resolve the same identifier
// against the same server, and their index-0 keys and pins must be equal.
//
//   - gitkeys_test.go: BuildKit's git source (Identifier, Resolve,
//     CacheKey, which runs git ls-remote) against git daemon, with no
//     session and no cache manager, which its CacheKey does not use
//     without signature verification. Annotated and lightweight tags with
//     and without keep-git-dir, the default branch, full and partial
//     refs, a name that is a branch and a tag, skip-submodules,
//     git.mtime, subdirs, every suffix at once, commit SHAs, git.checksum,
//     and git.fetchbycommit with and without a ref.
//   - imagekeys_test.go: BuildKit's docker-image source with a content
//     store and a lease manager over containerd metadata (no snapshotter,
//     no cache manager: its CacheKey reads manifests and configs only)
//     against the in-test registry. OCI and Docker manifests, zstd
//     layers, layer limits, OCI indexes and Docker manifest lists, and the
//     platforms linux/arm64 and linux/arm64/v8, which BuildKit keys as
//     given. BuildKit v0.34.1 computes one key per image (done at index
//     0); Stevedore's index 1 (the diff_ids' chainID) has no BuildKit
//     counterpart to compare with.
//   - httpkeys_test.go: BuildKit's http source, which downloads to learn a
//     file's checksum and Last-Modified, into the cache manager BuildKit's
//     own http tests make (native snapshotter). Last-Modified in the three
//     formats net/http reads and an unreadable one, ETag,
//     Content-Disposition, file attributes, headers and
//     http.authheadersecret.
//
// The tests check that cachefmt writes BuildKit's bytes for the cache a
// real BuildKit exported (testdata/caches/buildkit) and for generated
// sets of roots with results, the records Stevedore's exporter writes;
// that BuildKit and cachefmt refuse the same broken configs with the same
// error texts; and that the cache manifest is the one BuildKit's exporter
// writes. The exported helpers are for tests that run the real exporter
// service and check what it wrote.
//
// The empty gzip layer (cachefmt.EmptyGzipLayer) stays in chains, as in
// BuildKit v0.34.1, which keeps every blob of the chains it marshals
// (TestEmptyGzipLayer).
//
// # Why a separate module
//
// BuildKit's module brings about two hundred modules with it. Keeping it
// here, where no service imports it, keeps BuildKit's dependency graph
// out of the services' go.mod and go.sum files, their GOWORK=off builds
// and their images. In the workspace, MVS still raises the versions of
// the modules BuildKit shares with the services; the services' own
// go.mod files, which CI builds with GOWORK=off, are not changed.
package conformance
