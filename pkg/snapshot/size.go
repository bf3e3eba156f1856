package snapshot

import (
	"context"

	digest "github.com/opencontainers/go-digest"
)

// ChainSize is the uncompressed size of the committed snapshots of a
// layer chain (the chainIDs of its layers, bottom first), as Unpack
// recorded them: what a snapshot that already exists reports.
func (s *Store) ChainSize(ctx context.Context, chain []digest.Digest) int64 {
	return s.chainSize(ctx, chain)
}
