// Package cachefmt is BuildKit's remote cache format: the cache config
// (media type application/vnd.buildkit.cacheconfig.v0), the manifests that
// carry it, the attribute syntax that names where a cache lives
// (type=local,dest=DIR / type=registry,ref=REF), and the chains model the
// exporter builds and the importer reads back.
//
// # Vocabulary
//
//   - A record is one cache key of BuildKit's solver. Its digest is
//     RecordDigest(d, output) = sha256("<d>@<output>"), where d is the
//     vertex's cache-map digest; for a source that is the solver digest
//     sha256("buildkit.source.v0:" + key) and output is 0. A record has
//     inputs (the records that can feed each of its inputs: OR within an
//     input, AND across inputs) and results.
//   - A result is a layer chain: the blobs of a snapshot, bottom first.
//     In the config it is the index of its top layer (a record's "layers"
//     field) or an explicit list of layer indexes ("chains").
//   - A layer is one blob and the index of its parent layer. An absent
//     "parent" on the wire means 0, because the field is omitempty; "no
//     parent" is written as -1. That quirk is BuildKit's and is kept.
//   - Chains is the in-memory model: records by digest with their links
//     and results. Marshal turns it into a Config sorted the way BuildKit
//     sorts it (sortConfig), so the same records always give the same
//     bytes and the same manifest digest. Parse validates a Config with
//     BuildKit's rules and error texts and turns it back into Chains.
//   - The config travels as the config of an OCI image manifest whose
//     layers are the blobs (the image-manifest form, the default), or as
//     the last entry of an index whose other entries are the blobs (the
//     legacy index form). A cache can also be inline: the records JSON in
//     an image config under moby.buildkit.cache.v0.
//
// # Beyond BuildKit
//
// BuildKit exports source vertices as bare roots: a record with a digest
// and no result, so an importer cannot skip the source itself. Stevedore's
// exporter gives its roots the source's layer chain as their result, which
// is what lets an importer take a base image from the cache without asking
// the origin registry. BuildKit reads such a cache as usual.
package cachefmt
