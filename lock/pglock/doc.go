// Package pglock implements [lock.Locker] on PostgreSQL lease rows.
//
// Each key is one row in a lease table: the key, the holder's random owner
// value, a human-readable holder name, a fencing token drawn from a
// sequence, and the expiry. Expiry is written and judged by the database's
// clock (now()), so a client whose clock is skewed cannot break exclusion;
// the client's own deadline (lock.Lease.Done) is computed on its monotonic
// clock from the moment it sent the request, so it closes before the row
// expires.
//
// # Statements
//
// Acquire is a single statement: a common table expression that inserts the
// row, or takes over a row whose expiry has passed (INSERT … ON CONFLICT DO
// UPDATE … WHERE expires_at <= now()), and in the same statement reports the
// current holder and its remaining time when the key is taken. A live row is
// seen without locking it, so a failed attempt writes nothing. Refresh and
// Release check the owner value and the expiry: an UPDATE … WHERE key = $1
// AND owner = $2 AND expires_at > now(). Release hands the row to the next
// waiter (see Waiting) or marks it free rather than deleting it (so that a
// token can never go backwards, see the comment on the statements), and
// calls pg_notify in the same statement, so the notification is delivered
// when, and only if, the release commits.
//
// # Waiting
//
// Waiters of every process queue in the database, in a wait table beside
// the lease table (its name + "_wait"): one row per waiting Acquire with the
// key, its place (a value drawn from the token sequence), owner value,
// holder, TTL, the channel its Locker listens on, and an expiry. Each Locker
// keeps one dedicated connection that LISTENs on the table's channel and on
// a channel of its own, opened on the first wait and closed by Close.
//
// Acquire first tries the acquire statement; when the key is held, one
// statement takes it if it has come free meanwhile and otherwise queues the
// waiter. A release hands the key to the oldest live waiter in one
// statement: it gives the lease row that waiter's owner value, holder and a
// new token from the sequence, with an expiry of the waiter's TTL from now
// (never earlier than the waiter row's expiry), deletes the waiter's row,
// and notifies that waiter's channel alone ("token owner key"); the row
// never becomes free, so no other waiter is woken and none can barge in. A
// waiter of the releasing Locker is told at once, without the notification.
// A handoff also notifies, with the key, a channel named the table's name +
// "_held" that only holder readers ([lock.Locker.WatchHolder]) listen on.
// Only a release that finds nobody waiting frees the row and notifies the
// table's channel with the key. So a hot key costs one durable commit per
// handoff whichever process the next waiter lives in, and waiters are served
// in the order they queued. The waiters of one Locker queue there in the
// order they came, and an Acquire or TryAcquire of a Locker on a key it has
// waiters for is told the key is held without asking.
//
// A waiter's local deadline counts from its last statement that set its
// row's expiry (the queueing, or the latest keep-alive), which the
// handed-over lease's expiry is never earlier than. A waiter pushes its
// row's expiry forward every TTL/3. A waiter process that dies leaves a row
// that expires within its TTL and is skipped after that; a key handed to it
// before then is held by nobody until that lease's expiry, when the waiters
// behind it, which time their next look by the holder's expiry, take it. A
// row locked at the moment of a release (its waiter is leaving, or keeping
// it alive) is skipped rather than waited for; a release that skips the last
// waiter frees the key and notifies the table's channel, which wakes it. A
// waiter whose row is gone (it expired while its process stalled) queues
// again at the end. A waiter that gives up deletes its row and releases the
// key if a release handed it over meanwhile, which hands it on.
//
// Wake-ups lost while the listening connection is down are covered by a
// look at every reconnect and by a 50ms poll while disconnected. The wait
// table is UNLOGGED: queueing is not a durable commit, and a crash or
// failover that empties it only sends waiters back to the end of a new
// queue (at their next keep-alive or wake-up); the lease table, which
// carries exclusion, stays logged. A statement of a waiter whose caller gave
// up is left to finish before the waiter cleans up, since the server runs it
// anyway.
//
// # The table
//
// Nothing is created silently. Call [CreateTable] (pgx) or [CreateTableDB]
// (database/sql) once, or ship the statements [Schema] returns in your own
// migrations; a database set up for an earlier version needs the wait table
// added (CreateTable again, or the last statement of Schema), or every
// contended Acquire fails. The table is a regular, WAL-logged table: a lease row that
// vanished in a crash (as an UNLOGGED table's rows do) would let a second
// client take a key the first still believes it holds, and an unlogged table
// is not replicated to standbys. Commits use the server's synchronous_commit
// setting; with the default (on) every acquire and release waits for one WAL
// flush, which bounds throughput per connection. Tokens come from a sequence.
//
// The table keeps one row per key ever locked (about 100 bytes). Where keys
// are unbounded, delete rows that have been free for long, for example
// DELETE FROM haita_locks WHERE expires_at < now() - interval '1 day'
// (a row may only be deleted once it has been free for longer than any
// statement runs).
//
// # Clients
//
// [New] takes a *pgxpool.Pool; [NewDB] takes a *sql.DB opened with pgx's
// stdlib driver (github.com/jackc/pgx/v5/stdlib), whose connections it needs
// for LISTEN. Either way the statements run on the pool, one round trip each.
//
// # Advisory locks
//
// There is no advisory-lock mode. PostgreSQL's session advisory locks
// (pg_advisory_lock) are cheaper and wake waiters in the server's own queue,
// but they live exactly as long as one connection: the holder must keep that
// connection out of the pool for the whole hold, the lock has no TTL and no
// fencing token, and a connection that a proxy (PgBouncer in transaction
// mode) or a pool recycles silently loses or leaks it. Use them directly for
// short critical sections inside one transaction or connection you already
// own (pg_advisory_xact_lock); use pglock when the lock must outlive a
// connection, carry a fencing token, show its holder, or expire on its own
// when the holder dies.
package pglock
