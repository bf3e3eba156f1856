// Package events is Stevedore's event catalog: every message the services
// exchange, its CloudEvents type, its NATS subject and its typed payload.
//
// # Vocabulary
//
//   - A build is one client request and everything it causes. Its id (the
//     build id) is the CloudEvents subject of every event it causes and a token
//     of every NATS subject they travel on: stevedore.build.<buildID>.<name>.
//   - An Event is the envelope: a deterministic id, a versioned reverse-DNS
//     type, the producing component (source), the build id, a time, the id of
//     the event that caused it, and a typed Payload.
//   - A Payload is one of the structs in payloads.go. Each knows its own Type,
//     so a handler returns events.New(payload) and never spells a type string.
//   - A Spec is one row of the catalog (Catalog): the type, the short name used
//     in subjects, who produces and who consumes it, and a factory for its
//     payload. docs/events.md is the same table for people, and a test keeps
//     the two in step.
//
// # The flow
//
// A client publishes source.resolve.requested. The resolver parses the
// identifier and answers with source.resolved plus cachekey.requested for
// index 0, or source.failed. The puller takes each cachekey.requested: it
// computes the key for that index, looks it up in the cache index and emits
// cache.hit (done), or cachekey.computed followed by either
// cachekey.requested for the next index (carrying CacheOpts, so any replica
// continues without fetching the manifest again) or, after the last index,
// cache.miss. Every service may emit progress events with BuildKit's labels.
//
// A build may name its client session (SourceResolveRequested.Session,
// carried on by source.resolved and cachekey.requested): what the client
// serves while the build runs (pkg/session), its layouts, directories
// and secrets. Events name what a step reads there (a BlobLocation, a
// LocalContent, an Auth's secret names) and never carry a secret's value.
//
// # Wire format
//
// Events are CloudEvents 1.0 in binary content mode: attributes are ce-*
// headers (percent-encoded as the NATS protocol binding draft says), the body
// is the JSON payload, and the id is also sent as Nats-Msg-Id so the stream
// drops duplicates. Decode also accepts structured mode (a body that is a
// whole JSON CloudEvent, Content-Type application/cloudevents+json). Encode
// and Decode work on Message, a broker-neutral value: this package imports
// neither NATS nor containerd, so any client can use it (a test enforces it).
//
// # Ids
//
// The client chooses the id of the event that starts a build. Every event a
// service derives from an input has the id DeriveID(cause, type, n), where
// the bus runtime makes the cause of the input's id and its stream sequence
// (bus.Cause): the same stored input processed twice yields the same ids,
// and JetStream's duplicate window drops the second copy.
package events
