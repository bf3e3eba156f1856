package session

import (
	"context"

	"github.com/nats-io/nats.go"
)

// Protocol answers the operations of one protocol a session serves: the
// reads of its OCI layouts (pkg/session/store), the sync of local
// directories (pkg/session/dirsync), secrets (pkg/session/secret), the
// writes of output layouts (pkg/session/output). A Server routes to it
// the requests of its Ops, after it checked the build and opened a sealed
// body, and signs and sends its replies.
type Protocol interface {
	// Ops are the operations it answers: the last tokens of the session's
	// subjects. Two protocols of a session answer no operation both.
	Ops() []string
	// Answer computes the reply to one request: a body and HeaderSize
	// (SizeReply), an error (ErrorReply), or a message with the
	// protocol's own headers.
	Answer(ctx context.Context, req Request) *nats.Msg
}

// Request is one request a Protocol answers.
type Request struct {
	// Session is the id of the session asked.
	Session string
	// Op is the operation asked.
	Op string
	// Data is the request's body, opened when it was sealed.
	Data []byte
	// Limit is the most bytes a reply may carry: MaxChunkSize, less when
	// the NATS server's payload limit is lower.
	Limit int64
}
