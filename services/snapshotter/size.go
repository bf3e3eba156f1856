package snapshotter

import (
	"context"

	digest "github.com/opencontainers/go-digest"
)

// sizedStore is a Store that knows the size of a chain it holds
// (snapshot.Store does).
type sizedStore interface {
	ChainSize(ctx context.Context, chain []digest.Digest) int64
}

// existingSize is the size of a snapshot already on this node; 0 when the
// store cannot say.
func (h *Handler) existingSize(ctx context.Context, chain []digest.Digest) int64 {
	if s, ok := h.store.(sizedStore); ok {
		return s.ChainSize(ctx, chain)
	}
	return 0
}
