// Package idempotency runs an operation at most once per key and hands every
// later caller with the same key the outcome of that one run.
//
// A [Runner] claims the key in a [Store] before it runs the operation. The
// claim is a lease with a fencing token: while the operation runs, the Runner
// extends the lease in the background; a caller that dies mid-flight stops
// extending it, and once the lease has expired the next caller with the same
// key takes the key over with a greater token and runs the operation again.
// The outcome is stored only if the token (and the random owner value) that
// ran the operation still holds the claim, in the same statement or script
// that writes it, so an execution that was paused past its lease and resumes
// cannot overwrite the outcome of the execution that took over.
//
// A concurrent caller with the same key gets [ErrInFlight] from [Runner.Do],
// or waits for the outcome with [Runner.DoWait]. A caller with the same key
// and a different fingerprint gets [ErrMismatch]. Outcomes are kept for
// [Options.Retention] and then removed: by the engine's key expiry on Redis,
// by [SQLStore.Purge] on SQL databases.
//
// Stores: [SQLStore] on PostgreSQL, MySQL/MariaDB and SQLite (database/sql,
// with the lease expiry judged by the database's clock), and [RedisStore]
// (Lua scripts, expiry judged by the Redis server's clock).
//
// [Middleware] applies the IETF HTTPAPI draft "The Idempotency-Key HTTP
// Header Field" to a net/http handler: it replays the stored response (status,
// headers and body) to a retried request, answers 409 while the first request
// with the key is still being processed, 422 when the key comes back with a
// different request, and 400 when a required key is missing or malformed.
// docs/idempotency.md lists the draft's requirements and how each is met.
package idempotency
