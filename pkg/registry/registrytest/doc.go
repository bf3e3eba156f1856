// Package registrytest runs an in-process OCI distribution registry for
// tests, with request accounting, fault injection and byte-exact pushes of
// the OCI image layouts under testdata/images.
//
// # Vocabulary
//
//   - A Registry is go-containerregistry's pkg/registry behind an
//     httptest.Server on 127.0.0.1. New starts one and registers its Close
//     with t.Cleanup; Host is the "127.0.0.1:PORT" to put in image
//     references.
//   - A Request is one HTTP request the registry answered, classified by
//     Kind (manifest, blob, upload, tags or other) from its path
//     /v2/<repo>/manifests/<ref>, /v2/<repo>/blobs/<digest>,
//     /v2/<repo>/blobs/uploads/<id> or /v2/<repo>/tags/list, with its raw
//     query (Request.Query) and User-Agent (Request.UserAgent, which tells
//     clients sharing the registry apart). Count, Counts and Requests report
//     them; Uploads picks those that carried blob content and Mounts the
//     cross-repository mounts; Reset forgets them.
//   - Blobs belong to repositories, as in a real registry: a blob pushed to
//     one repository is not in another (a HEAD there is 404) until it is
//     pushed or mounted there. A mount,
//     POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<source>, of a blob
//     the source holds answers 201 Created and sends no content;
//     go-containerregistry's registry ignores mount and from, so this
//     package answers them itself. A mount the source cannot serve starts
//     an upload session (202 Accepted), as the distribution spec says.
//     Blob and Manifest read back what the registry holds, unrecorded.
//   - A FailRule makes matching requests fail with a chosen status a given
//     number of times (Fail). RequireAuth makes every request need HTTP
//     Basic credentials, and WithLatency delays every response.
//   - PushLayout and PushLayoutRef copy one image (or index) from an OCI
//     image layout into the registry with plain distribution API calls:
//     blobs first, then child manifests by digest, then the top-level
//     manifest by tag. Manifest bytes and media types are sent exactly as
//     stored, so every digest in the layout (and in
//     testdata/images/expected.json) is the digest the registry serves.
//     PushBlob and PushManifest are the primitives, for tests that build
//     unusual manifests by hand.
//
// # Lifecycle
//
// Pushes are not requests under test: they are neither recorded nor
// counted, and auth, fault rules and latency do not apply to them. So a test
// pushes its fixtures, installs fault rules, runs the code under test and
// then inspects Count or Requests. Every method is safe for concurrent use;
// the push helpers call t.Fatalf and so must run on the test's goroutine.
package registrytest
