package events

import "context"

type inputKey struct{}

// WithInput returns ctx carrying e, the event a handler is handling: what
// Input returns. The bus runtime sets it (pkg/bus Typed) for each event
// it hands to a handler.
func WithInput(ctx context.Context, e Event) context.Context {
	return context.WithValue(ctx, inputKey{}, e)
}

// Input returns the envelope of the event being handled: its id, build and
// time, which a typed handler does not receive as arguments. It is request
// metadata, not configuration. A package that reads it (a session client
// naming the build it reads for) needs no bus to.
func Input(ctx context.Context) (Event, bool) {
	e, ok := ctx.Value(inputKey{}).(Event)
	return e, ok
}
