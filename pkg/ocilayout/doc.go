// Package ocilayout reads and writes OCI image layouts, the on-disk format
// of the OCI image-spec, in the shape BuildKit's client writes them: the
// local cache exporter (type=local,dest=DIR,tag=T) and importer
// (type=local,src=DIR,tag=T or digest=D) use it, and so will the
// oci-layout:// image source.
//
// # Vocabulary
//
//   - A layout is a directory (its root) holding an oci-layout file
//     ({"imageLayoutVersion":"1.0.0"}), a blobs directory and, once
//     something is tagged, an index.json. Create makes one, Open opens an
//     existing one; a *Layout is only the root's path, so any number of
//     values, in any number of processes, may share a directory.
//   - A blob is content addressed by its digest and stored at
//     blobs/<algorithm>/<encoded>, for example blobs/sha256/<64 hex>. A
//     descriptor (ocispec.Descriptor) names a blob by digest and size.
//     Manifests, image indexes, configs, layers and BuildKit's cache
//     configs are all blobs; this package does not interpret them.
//   - The index is index.json: an OCI image index (schemaVersion 2, media
//     type application/vnd.oci.image.index.v1+json) whose manifests are the
//     layout's entry points. It is the only mutable file.
//   - A tag is an index entry's org.opencontainers.image.ref.name
//     annotation. Tag adds an entry exactly as BuildKit's ociindex.Put does
//     (replacing older entries of the same tag that containerd did not
//     name), and Resolve finds one the way BuildKit's client looks one up:
//     by io.containerd.image.name first, then by ref name.
//
// # Lifecycle
//
// A writer puts every blob first (WriteBlob, which verifies size and digest
// as it streams) and tags the root manifest or index last (Tag). A reader
// resolves a tag or takes a digest and reads blobs (OpenBlob, or ReadBlob
// for small JSON blobs, which verifies them). Nothing is ever deleted:
// garbage collection is out of scope.
//
// # Crash safety
//
// Every file that appears under a final name appears whole, by rename:
//
//   - A blob is streamed into a temporary file in its algorithm directory
//     whose name starts with a dot (so it is never taken for a blob), checked
//     against its descriptor, and only then renamed to its final name. A
//     process that dies at any point leaves at most a dot-file, which is
//     garbage that may be removed while no writer runs; no file under a
//     blob's final name ever holds other content. Blobs are not fsynced:
//     after a power loss a recent blob may be missing or short, which Has
//     (size) and ReadBlob (size and digest) report, and the next export
//     writes it again.
//   - index.json is rewritten by writing and fsyncing a temporary file and
//     renaming it over the old one, under exclusive flocks on the root
//     directory and on index.json.lock (a separate file in the root, the
//     lock BuildKit's client takes). Readers take no lock and always see a
//     whole index, old or new; concurrent writers using this package, in
//     this process or others, never lose each other's entries, and
//     BuildKit's writers are excluded by the lock file. The lock file is
//     left in place: removing it would let two writers lock different
//     files (BuildKit's client does remove it, which is why the directory
//     is locked too).
//   - oci-layout is written once, whole, and never replaced.
//
// File modes are 0644 for oci-layout and index.json, 0444 for blobs and
// 0755 for directories, less the process umask: a layout is meant to be
// read by other tools and users (buildx, skopeo, a registry push).
package ocilayout
