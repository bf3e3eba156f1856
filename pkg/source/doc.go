// Package source parses BuildKit source identifiers and computes their
// cache keys, bit for bit as BuildKit does.
//
// # Vocabulary
//
//   - An identifier is "<scheme>://<rest>" plus string attributes and a
//     platform (events.SourceOp). Parse turns it into a typed Identifier for
//     one of BuildKit's schemes: docker-image, docker-image+blob, oci-layout,
//     oci-layout+blob, git, http, https and local. Attribute keys are
//     BuildKit's (attrs.go) and so are the error texts.
//   - A Manager maps schemes to handlers. Its Identifier method parses (an
//     unknown scheme fails with "unknown scheme <s>: not found"); its Resolve
//     method finds the handler (a scheme nobody handles fails with
//     "no handler for <s>"). The handler type is the caller's: the resolver
//     maps schemes to the service that continues, the puller to the code that
//     computes keys.
//   - A key is what a handler returns for one index of BuildKit's CacheMap
//     loop. For docker-image, index 0 is MainManifestKey (the top-level
//     digest, platform and layer limit) and index 1 is ConfigKey (the chainID
//     of the config's diff_ids). SolverDigest is what BuildKit's solver makes
//     of a key, and RecordDigest what its cache exporter names a root record.
//     A blob identifier's key needs no network (ImageBlobIdentifier.CacheKey).
//   - Some of BuildKit's checks happen when a source is resolved, not parsed;
//     they are methods, such as OCIIdentifier.RequireDigest.
//   - Every identifier's String is its canonical form, and parses back (with
//     the same attributes) to an identifier with the same String, because
//     that is what later events carry.
//   - NormalizeImageRef is the client side of BuildKit's image naming
//     (alpine becomes docker.io/library/alpine:latest); the daemon side,
//     and so Parse, never normalises.
package source
