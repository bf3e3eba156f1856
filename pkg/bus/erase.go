package bus

import (
	"context"
	"sync/atomic"
)

// Erase asks the runtime to delete the input being handled from its
// stream once the handler's outputs are published and the input is acked:
// for an input that holds what no one may read later (a client's request
// with credentials in a URL), which the handler refuses with an output,
// not an error, so no dead-letter copy is made either. The delete
// overwrites the message (JetStream's secure delete); it needs the
// service's user to be allowed $JS.API.STREAM.MSG.DELETE on the stream
// (deploy/nats.conf). Outside a handler it does nothing.
func Erase(ctx context.Context) {
	if f, ok := ctx.Value(eraseKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

type eraseKey struct{}
