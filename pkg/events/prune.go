package events

// SubjectPrune is the core NATS subject (not a stream's) on which every
// snapshotter answers a PruneRequest for its node: a client publishes one
// request with a reply inbox and collects one PruneReply per node.
const SubjectPrune = "stevedore.admin.prune"

// PruneRequest asks every snapshotter to prune its node.
type PruneRequest struct {
	// KeepFor is how long cache records are kept, as Go's time.Duration
	// prints it ("168h0m0s"); "0s" drops every record of the node.
	KeepFor string `json:"keepFor"`
}

// PruneReply is what one snapshotter removed.
type PruneReply struct {
	// Node names the snapshotter's node.
	Node string `json:"node"`
	// Snapshots and Blobs count what was removed; Bytes is their size.
	Snapshots int   `json:"snapshots"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
	// Error is set when the node could not prune.
	Error string `json:"error,omitempty"`
}
