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
// AND owner = $2 AND expires_at > now(). Release marks the row free rather
// than deleting it (so that a token can never go backwards, see the comment
// on the statements) and calls pg_notify in the same statement, so the
// notification is delivered when, and only if, the release commits.
//
// # Waiting
//
// Each Locker keeps one dedicated connection that LISTENs on a channel named
// after the table, opened on the first wait and closed by Close. The
// notification's payload is the key.
//
// The waiters of one Locker queue per key in the order they came (FIFO
// within a Locker, kept by [lock.WaitQueue]): only the first asks the database, and is woken by a
// notification; the others wait behind it without a round trip, and an
// Acquire or TryAcquire of the same Locker on a key it has waiters for is
// told the key is held without asking. A release by the same Locker hands
// the key straight to the first waiter in one statement — an UPDATE that
// sets the waiter's owner value, holder and expiry and draws a new token
// from the sequence, with no NOTIFY since the row never becomes free — so a
// handoff costs one commit instead of a release, a notification and an
// acquire, and a goroutine that releases and at once acquires again cannot
// barge ahead of goroutines that have been waiting. The handed-over lease's
// local deadline counts from when that UPDATE was sent. A key handed to a
// waiter that gave up in the meantime is released again. After 8 handoffs
// in a row a release frees the row and notifies, so waiters in other
// processes get a turn; they compete with the Locker's first waiter as
// usual, so the order across processes is not FIFO
// (lock.Capabilities.FIFO is false).
//
// A wait whose wake-up was lost — the listening connection broke, or the
// holder's lease ended without a release — is covered by the poll fallback (lock.Options.PollInterval, 1s by default) and by the
// holder's expiry, which a HeldError reports. An acquire statement whose
// caller gave up is left to finish and its grant, if any, released, since
// the server runs it anyway.
//
// # The table
//
// Nothing is created silently. Call [CreateTable] (pgx) or [CreateTableDB]
// (database/sql) once, or ship the statements [Schema] returns in your own
// migrations. The table is a regular, WAL-logged table: a lease row that
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
