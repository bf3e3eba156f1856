// Package rootfs serves the root filesystem of a snapshot, from the node
// that holds it, to a client of the fleet (`stevedore pull --nats
// --output`), as one tar stream: no blob is downloaded again and nothing
// is decompressed again.
//
// # Vocabulary and lifecycle
//
//   - A client asks the node that holds a snapshot for its root
//     filesystem with a Request on core NATS (Subject(node): nothing is
//     stored), naming its build and the snapshot. The node answers only
//     for a snapshot that build's own events answered with: a cache.hit or
//     snapshot.ready of that snapshot on that node, which clients cannot
//     publish (the Server's Allow decides).
//   - The answer is a Grant: a URL of the node's HTTP endpoint with a
//     token, good for one GET within the grant's lifetime, sealed to the
//     public curve key the Request carries (Open makes one per request).
//     Clients of a fleet share one NATS user and may read each other's
//     replies; sealed, a grant someone else reads gives them nothing.
//   - The GET streams the tar; its checksum (xxHash-64) follows as an
//     HTTP trailer (TrailerDigest), so the client tells a complete stream
//     from a cut or corrupt one: a Stream reports ErrIncomplete unless
//     every byte arrived and matched. The checksum travels with the bytes,
//     so no hash of it could tell a forged stream from the node's (only
//     TLS in front of the endpoint does); what it tells is completeness
//     and integrity, for which a cryptographic hash would only cost time
//     (SHA-256 was a tenth of the CPU of a pull --nats --output).
//
// Blobs never go through the bus: the bus carries the small request and
// grant; the bytes go over HTTP, at the speed of a loopback or the node's
// network, without the bus's 1 MB message limit, chunking and per-chunk
// round trips.
package rootfs

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// SubjectPrefix starts the subject of every Request; the node name
// follows (Subject).
const SubjectPrefix = "stevedore.rootfs."

// TrailerDigest is the HTTP trailer carrying "xxh64:<hex>", the
// xxHash-64 checksum (seed 0, big-endian hex) of the whole tar stream.
const TrailerDigest = "Stevedore-Tar-Digest"

// pathPrefix starts the path of every grant's URL; the token follows.
const pathPrefix = "/rootfs/"

// ErrIncomplete marks a stream that ended before its end, or whose bytes
// do not match the digest the node sent.
var ErrIncomplete = errors.New("root filesystem stream incomplete or corrupt")

// ErrUnreachable marks a node that did not answer: none serves the
// subject, or none answered in time. The caller falls back to another
// source.
var ErrUnreachable = errors.New("node holding the snapshot is not reachable")

// ErrRefused marks a node that answered with a refusal (Grant.Error).
var ErrRefused = errors.New("node refused the root filesystem")

// Subject is the subject node answers Requests on. Characters NATS gives a
// meaning to (".", "*", ">", spaces) become "_".
func Subject(node string) string {
	var b strings.Builder
	for _, r := range node {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return SubjectPrefix + b.String()
}

// Request asks a node for the root filesystem of one of its snapshots.
type Request struct {
	// Build is the build whose events answered with the snapshot.
	Build string `json:"build"`
	// SnapshotKey is the snapshot's name on the node.
	SnapshotKey string `json:"snapshotKey"`
	// Key is the asker's public curve key (nkeys, "X…") the grant's URL
	// is sealed to; Open fills it in. A request without one is refused.
	Key string `json:"key,omitempty"`
}

// Grant is a node's answer.
type Grant struct {
	// SealedURL is the URL that streams the tar, once, sealed to the
	// Request's Key by SealedBy. Empty with Error.
	SealedURL []byte `json:"sealedURL,omitempty"`
	// SealedBy is the node's public curve key that sealed SealedURL.
	SealedBy string `json:"sealedBy,omitempty"`
	// Error says why the node refused; empty when it granted.
	Error string `json:"error,omitempty"`
}

// digestWriter checksums a stream for TrailerDigest.
type digestWriter struct{ h *xxhash.Digest }

func newDigestWriter() *digestWriter { return &digestWriter{h: xxhash.New()} }

func (d *digestWriter) Write(p []byte) (int, error) { return d.h.Write(p) }

func (d *digestWriter) String() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], d.h.Sum64())
	return "xxh64:" + hex.EncodeToString(b[:])
}

var _ io.Writer = (*digestWriter)(nil)
