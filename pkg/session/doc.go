// Package session lets the client that submits a build serve content to the
// fleet over NATS, while it is connected: Stevedore's counterpart of
// BuildKit's gRPC session, through which the daemon reads a client's OCI
// layouts (oci-layout://, oci-layout+blob://), local directories and
// secrets.
//
// # Vocabulary
//
//   - A session is one client connection that serves content for its
//     builds. It has an id (NewID), a subject token that a build names as
//     its session (events.SourceResolveRequested.Session) or a source in
//     its oci.session or local.session attribute, and that events carry
//     (events.BlobLocation, events.Auth). Any replica of any service can read from it: the
//     session answers NATS requests on its own subjects, so no service has
//     to be the one the client talks to.
//   - A protocol is what a session serves, in a package of its own that
//     answers some operations (Protocol, Config.Protocols) and asks them
//     through a Client (Client.Request): pkg/session/store serves the
//     session's stores, named OCI image layouts (the oci.store attribute;
//     BuildKit's "oci:<store>" content store) whose blobs are read by
//     digest; pkg/session/output lets the fleet write into a layout the
//     client opened (a local cache export's destination, served as a
//     store too); pkg/session/dirsync serves local directories by name
//     (the local source's name, local://<name>), read as a listing and
//     then the content of the files a reader wants; pkg/session/secret
//     serves the named values the session holds for the build (buildctl's
//     --secret id=…), sealed to the reader on the way (Client.ReplyKey) so
//     that only it opens them. Services keep secrets nowhere: not in
//     events, logs, buckets or keys.
//   - A chunk is one request and its reply: at most MaxChunkSize bytes (of
//     a blob, of files), well below the NATS payload limit. A reader reads
//     a blob as chunks in order, a few ahead of it (WithChunkSize,
//     WithReadAhead).
//
// # Subjects and messages
//
// Every subject of session <id> is under stevedore.session.<id> (Filter).
// Requests are JSON values; replies carry their metadata in NATS headers
// (HeaderSize, the size of what a reply is about) and the bytes in the
// body:
//
//   - stevedore.session.<id>.blob, stevedore.session.<id>.stat and
//     stevedore.session.<id>.index: a range of a blob of a store, its
//     size, a store's index.json (pkg/session/store). A local cache
//     export is imported this way.
//
//   - stevedore.session.<id>.list and stevedore.session.<id>.files: a
//     local directory's listing and files' content (pkg/session/dirsync).
//
//   - stevedore.session.<id>.secret: one secret, sealed to the request's
//     key (pkg/session/secret).
//
//   - stevedore.session.<id>.write and stevedore.session.<id>.tag: a blob
//     written in chunks into an output store (pkg/session/output),
//     verified and committed by the session when the last arrives, and a
//     manifest tagged. A local cache export is written this way: the
//     client opens the directory with its own rights, and the fleet never
//     opens a path a client names.
//
//   - stevedore.session.<id>.ping (OpPing): whether the session still
//     serves the build; the snapshotter stops work for a build whose
//     client is gone.
//
//   - An operation the session does not serve (a protocol it was not
//     given) is answered with CodeNotFound.
//
// Every request carries HeaderBuild, the build the reader works for (from
// events.Input). A session that names its builds (Config.Builds) answers any
// other with CodeNoSession, which readers take as *NoSessionError: a
// client that learns another's session id reads nothing through a build
// of its own.
//
// A keyed session (Key, NewKey: the CLI's own sessions) has the public key
// of a signing key as its id and signs every answer (HeaderSignature); a
// reader asking a session whose id is a key (IsKeyID) accepts only answers
// that key signed and drops any other, so a client that subscribes to
// another's session subjects cannot answer for it. Nor can it read what is
// asked of it: a keyed session also has a curve key, which it tells on
// stevedore.session.<id>.key (OpKey, a signed answer), and every other
// request to it is sealed to that key (HeaderSealedBy names the
// requester's), so the chunks written into its cache, the paths asked of
// its directories and the digests read cross the bus readable by the
// session alone; it refuses a request that is not sealed to it.
//
// Who may request what is the NATS server's permissions
// (deploy/nats.conf): secrets only the puller and snapshotter users,
// directory listings only the snapshotter user; clients request nothing,
// so one client never reads another's session.
//
// An error reply has header HeaderError holding a code (CodeNotFound,
// CodeInvalid, CodeInternal: the class of pkg/failure the reader's error
// matches, Errorf) and the error's text as its body. No reply at all (NATS answers "no responders" when nobody
// subscribes) means the session is gone.
//
// # Lifecycle
//
// The client calls Serve before it submits the build that names the
// session, and stops the Server (or ends Serve's ctx) when the build ended:
// from then on every read fails with BuildKit's message, `no active session
// for <id>` (*NoSessionError), which is permanent for the build that needed
// it. A session holds no state beyond what its protocols serve; serving the same id again
// (a reconnect) picks up where it left off.
//
// Readers verify: the protocols' clients check what a reply announces
// (a blob's size and, at its end, its digest: store.Client), and callers
// verify again what they consume (pkg/snapshot, the image walk), as with
// every blob stream in Stevedore.
package session
