package source

import (
	"fmt"
	"strings"
	"sync"

	"github.com/stevedore-dev/stevedore/pkg/events"
)

// Identifier is a parsed source identifier of one scheme.
type Identifier interface {
	// Scheme is the scheme the identifier was parsed for.
	Scheme() string
	// String is the canonical identifier, as BuildKit prints it.
	String() string
}

// Parse turns a source op into a typed identifier. It fails like BuildKit's
// source manager: "failed to parse <id>: invalid" when there is no "://",
// "unknown scheme <s>: not found" for a scheme BuildKit does not have, and
// the scheme's own messages for bad references or attributes.
func Parse(op events.SourceOp) (Identifier, error) {
	scheme, ref, ok := strings.Cut(op.Identifier, "://")
	if !ok {
		return nil, fmt.Errorf("failed to parse %s: %w", op.Identifier, ErrInvalid)
	}
	spec, ok := schemes[scheme]
	if !ok {
		return nil, fmt.Errorf("unknown scheme %s: %w", scheme, ErrNotFound)
	}
	return spec.parse(scheme, ref, op.Attrs, op.Platform)
}

// Manager maps schemes to handlers of type H.
type Manager[H any] struct {
	mu       sync.RWMutex
	handlers map[string]H
}

// NewManager returns a Manager with no handlers.
func NewManager[H any]() *Manager[H] {
	return &Manager[H]{handlers: map[string]H{}}
}

// Register makes h the handler of schemes; a later registration of the same
// scheme replaces the earlier one, as in BuildKit.
func (m *Manager[H]) Register(h H, schemes ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range schemes {
		m.handlers[s] = h
	}
}

// Identifier parses op (see Parse).
func (m *Manager[H]) Identifier(op events.SourceOp) (Identifier, error) {
	return Parse(op)
}

// Resolve returns the handler of id's scheme, or an error that reads
// "no handler for <scheme>" and matches ErrNoHandler.
func (m *Manager[H]) Resolve(id Identifier) (H, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.handlers[id.Scheme()]
	if !ok {
		var zero H
		return zero, &noHandlerError{scheme: id.Scheme()}
	}
	return h, nil
}

type noHandlerError struct{ scheme string }

func (e *noHandlerError) Error() string        { return "no handler for " + e.scheme }
func (e *noHandlerError) Is(target error) bool { return target == ErrNoHandler }
