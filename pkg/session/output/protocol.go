package output

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/stevedore-dev/stevedore/pkg/ocilayout"
	"github.com/stevedore-dev/stevedore/pkg/session"
)

// Server serves the output layouts of a session: its OpWrite and OpTag.
type Server struct {
	outputs map[string]*ocilayout.Layout
	// writeMu serialises the writes of output stores' chunks.
	writeMu sync.Mutex
}

var _ session.Protocol = (*Server)(nil)

// NewServer returns a Server of outputs, the OCI layouts the session lets
// the fleet write into, by store id: a cache export's destination, which
// the client opened with its own rights. Nil lets the fleet write
// nothing.
//
// Errors: a store without a layout.
func NewServer(outputs map[string]*ocilayout.Layout) (*Server, error) {
	for id, l := range outputs {
		if l == nil {
			return nil, fmt.Errorf("session: output store %q has no layout", id)
		}
	}
	return &Server{outputs: outputs}, nil
}

// Ops implements session.Protocol: OpWrite and OpTag.
func (s *Server) Ops() []string { return []string{OpWrite, OpTag} }

// Answer implements session.Protocol.
func (s *Server) Answer(ctx context.Context, r session.Request) *nats.Msg {
	if r.Op == OpWrite {
		return s.writeBlob(ctx, r.Session, r.Data)
	}
	return s.tag(ctx, r.Session, r.Data)
}

// Client writes into the output layouts of sessions.
type Client struct {
	c *session.Client
}

// NewClient returns a Client that sends its requests through c.
func NewClient(c *session.Client) *Client { return &Client{c: c} }
