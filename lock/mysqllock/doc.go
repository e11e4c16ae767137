// Package mysqllock implements [lock.Locker] on MySQL and MariaDB lease rows,
// through database/sql and github.com/go-sql-driver/mysql.
//
// Each key is one row of an InnoDB lease table: the key, the holder's random
// owner value, a human-readable holder name, a fencing token and the expiry.
// Expiry is written and judged by the database's clock (UTC_TIMESTAMP(6),
// the statement's start on the server), so a client whose clock is skewed
// cannot break exclusion, and the session time zone plays no part; the
// client's own deadline (lock.Lease.Done) is computed on its monotonic clock
// from the moment it sent the request, so it closes before the row expires.
//
// # Statements
//
// Acquire is one statement, INSERT … ON DUPLICATE KEY UPDATE, that inserts
// the row or takes over a row whose expiry has passed; the new token comes
// back in the OK packet as the statement's LAST_INSERT_ID, so a grant costs
// one round trip. A key that is held leaves its row unchanged and
// LAST_INSERT_ID 0; a second query then reads the holder and its remaining
// time for the [lock.HeldError]. Refresh and Release are one UPDATE each,
// WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6).
// Release marks the row free rather than deleting it. The statements are
// prepared once per pooled connection, so each costs one round trip.
//
// The token is the key's previous token + 1, or the server's clock in
// microseconds since 1970 when that is greater. It therefore increases
// strictly for every holder of a key, also across releases (the row stays),
// and a row deleted by a clean-up job and inserted again starts above every
// token it had, unless the server's clock was stepped back by more than the
// time the row was free. Tokens are large numbers (about 1.8e15); compare
// them, never count them.
//
// # Waiting
//
// MySQL and MariaDB have no LISTEN/NOTIFY. What was considered, and why it
// is not used:
//
//   - GET_LOCK as a wake-up: a waiter can block in the server on a named
//     lock only if the holder holds it, so every Locker would pin a
//     connection holding one named lock per lease it holds, with two more
//     round trips per lease on that connection (a serialisation point for
//     all keys of the Locker), and one more pinned connection per waiting
//     key. A waiter that wins the named lock while the holder has not taken
//     it yet, or after the holder's connection broke, learns nothing.
//   - KILL QUERY of a waiter sleeping in SELECT SLEEP(…), its connection id
//     stored in the row: cheap, but behind a proxy (ProxySQL, MaxScale) or
//     on Galera a connection id names another connection than the one that
//     stored it, and killing an unrelated statement of the application is
//     not acceptable; it also needs the same database user for every
//     process.
//   - The binary log, performance_schema or a trigger: need privileges or
//     server settings an application cannot assume.
//
// So a waiter polls: every 25–50ms by default ([DefaultPollInterval],
// lock.Options.PollInterval to change), and at the moment the holder's row
// expires, which the failed acquire reports. Waiters of one Locker wait in
// its [lock.WaitQueue], in the order they started: only the first of them
// polls the server, and a release by the same Locker hands the key to it in
// one statement that gives the row the waiter as owner, a new token and a
// full TTL, never freeing the row, so a hot key shared by the goroutines of
// one process passes from holder to holder in one round trip. After
// [lock.MaxHandoffs] handoffs in a row a release frees the key, so that
// waiters in other processes get a turn. Each poll is one acquire statement
// plus one SELECT; a hot key with many waiting processes costs the server
// that many statements per poll interval.
//
// An acquire statement whose caller gave up is left to finish and its
// grant, if any, released, since the server runs it anyway (see
// [lock.Detached]); Close waits for such statements (each is bounded by the
// TTL, and its release by 5s).
//
// # GET_LOCK
//
// There is no GET_LOCK mode. A named lock (GET_LOCK/RELEASE_LOCK) belongs
// to one connection: the holder must keep that connection out of the pool
// for the whole hold; the lock has no TTL, no fencing token and no holder
// name; a connection that a pool recycles, a proxy multiplexes or a network
// fault breaks silently loses it (the server frees it when it notices the
// connection is gone, and another client may then take it while the first
// still acts); and Galera does not replicate it, so two nodes can grant the
// same name. It is safe, and cheaper than this package (see
// docs/benchmarks.md), only for a critical section inside one connection
// that the caller owns from GET_LOCK to RELEASE_LOCK (sql.DB.Conn), on a
// single server without a multiplexing proxy, where losing the connection
// also aborts the work. Use mysqllock when the lock must outlive a
// connection, carry a fencing token, show its holder, or expire on its own
// when the holder dies.
//
// # The table
//
// Nothing is created silently. Call [CreateTable] once, or ship the
// statement [Schema] returns in your own migrations; [WithTable] names
// another table than [DefaultTable]. The table is InnoDB: a grant is
// durable when the statement returns with the server's default
// innodb_flush_log_at_trx_commit=1, and survives a crash of the server
// (with 0 or 2 a crash can forget a lease the client was told it holds).
// Every acquire and release waits for one redo-log flush, which bounds
// throughput per connection.
//
// Put no trigger on the table: the token comes back as the statement's
// insert id, and MariaDB 10.11 reports none for statements on a table with
// a trigger (an acquire then looks like "held", and a handoff fails).
//
// The table keeps one row per key ever locked (about 100 bytes). Where keys
// are unbounded, delete rows that have been free for long, for example
// DELETE FROM haita_locks WHERE expires_at < UTC_TIMESTAMP() - INTERVAL 1 DAY.
//
// # Replication and clusters
//
// Statements use only replication-safe functions (UTC_TIMESTAMP and
// LAST_INSERT_ID are logged with the statement), so the table replicates
// under statement- and row-based logging. Run every Locker against the
// primary: a replica's copy lags, and a failover to an asynchronous replica
// can lose grants (lock.Capabilities.FailoverSafe is false). On Galera,
// point every Locker at the same node.
//
// # Servers
//
// The tests run on MariaDB 10.11. The statements are MySQL's too (MySQL 8
// accepts VALUES() in ON DUPLICATE KEY UPDATE with a deprecation warning),
// but MySQL itself was not tested.
//
// # Driver settings
//
// The *sql.DB must use github.com/go-sql-driver/mysql; [New] refuses
// another driver. No DSN parameter is required; clientFoundRows and
// interpolateParams do not change the results. database/sql keeps only two
// idle connections by default: where many goroutines lock at once, raise
// it (sql.DB.SetMaxIdleConns) to about their number, or statements keep
// opening new connections, and preparing the statements on each. A session that sets the
// timestamp system variable (SET timestamp = …) changes what the server's
// clock reads for that session: do not set it on the pool a Locker uses.
package mysqllock
