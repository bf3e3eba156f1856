// Package output is the session protocol through which the fleet writes
// into a layout the client opened with its own rights (a local cache
// export's destination): a blob in chunks (Client.Write), verified and
// committed by the session when the last arrives, and a manifest tagged
// (Client.Tag). The client does the file I/O, and the bytes cross its
// session: the fleet never opens a path a client names. What is written
// is read back through the session's stores (pkg/session/store: OpStat,
// OpBlob, OpIndex), where the client serves the same layout.
//
// A session serves its output layouts with a Server in its
// session.Config.Protocols, on stevedore.session.<id>.write (OpWrite)
// and stevedore.session.<id>.tag (OpTag).
//
// Errors: a store the session does not let the fleet write matches
// failure.ErrNotFound; content the session refuses (a digest or size
// other than the descriptor's, a tag of a blob not written),
// failure.ErrInvalid.
package output
