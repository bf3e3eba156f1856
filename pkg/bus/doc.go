// Package bus is the runtime every Stevedore service runs on: NATS
// JetStream, used directly, with its acknowledgement vocabulary in reach.
//
// # Vocabulary
//
//   - The topology (Provision) is the events stream, the advisories and
//     DLQ streams, the KV buckets, and one durable pull consumer per service
//     (Consumer), shared by all of the service's replicas.
//   - A Worker binds a replica to its service's consumer, pulls with a
//     prefetch equal to its concurrency, and hands each decoded event to the
//     Handler registered for its type. Handlers are pure: they return the
//     events they produce (Typed adapts a handler of one payload type).
//   - The Worker publishes a handler's outputs with ids derived from the
//     input (the stream drops duplicates), then acks. While a handler runs
//     it sends InProgress every third of AckWait.
//   - A handler error carries a class of pkg/failure (ErrInvalid,
//     ErrNotFound, ErrUnauthorized, ErrUnreachable, ErrUnavailable,
//     ErrConflict), given where the error was made; Action maps the class
//     and the delivery count to a Verdict: NakWithDelay with exponential
//     backoff, or a source.failed event and TermWithReason. On the last
//     allowed delivery a retryable error is given up on the same way.
//   - The DLQ mover copies every terminated or max-delivered event into the
//     DLQ stream from JetStream's advisories, and reports builds that no
//     worker ever answered.
//   - Publisher publishes events and waits for the stream's
//     acknowledgements; WatchBuild follows one build's events from the first.
//
// Middleware (recover, logging) lives in package middleware; bustest starts
// an embedded server per test.
package bus
