// Package middleware holds the cross-cutting wrappers of bus handlers, one
// per file: Recover (a panic becomes an error, not a dead service) and
// Logging (one structured line per failure, debug lines per success, with
// the build id, event type and event id). Each is a bus.Middleware; a
// service lists them in bus.WorkerConfig.Middleware, outermost first.
package middleware
