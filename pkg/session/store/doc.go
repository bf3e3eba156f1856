// Package store is the session protocol through which the fleet reads a
// client's OCI image layouts, its stores: a store is a named layout the
// session serves (the oci.store attribute of oci-layout:// and
// oci-layout+blob:// sources; BuildKit's "oci:<store>" content store),
// whose blobs are read by digest. A local cache export is imported
// through it too, from the layout the client opened (pkg/session/output
// writes it).
//
// A session serves its stores with a Server in its
// session.Config.Protocols, on
//
//   - stevedore.session.<id>.blob (OpBlob): bytes [Offset, Offset+Length)
//     of a blob, fewer at its end; the reply's session.HeaderSize holds
//     the size of the whole blob. A reply carries at most
//     session.MaxChunkSize bytes.
//   - stevedore.session.<id>.stat (OpStat): an empty body with
//     session.HeaderSize.
//   - stevedore.session.<id>.index (OpIndex): a store's index.json.
//
// Requests are BlobRequest values in JSON.
//
// A Client reads a blob as chunks in order, a few ahead of the reader
// (session.WithChunkSize, session.WithReadAhead), and verifies: it checks
// the size every reply announces against the descriptor and, when a
// reader reaches the end of a blob, its digest.
//
// Errors: a store or blob the session does not have matches
// failure.ErrNotFound; a malformed store, digest or range, or a blob
// larger than a caller's limit, failure.ErrInvalid; content other than
// its descriptor, session.ErrVerify; a gone session,
// *session.NoSessionError.
package store
