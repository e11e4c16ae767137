// Package sqlcc is database concurrency control for database/sql on
// PostgreSQL (github.com/jackc/pgx/v5/stdlib), MySQL/MariaDB
// (github.com/go-sql-driver/mysql) and SQLite (modernc.org/sqlite), and for
// pgx's native API on PostgreSQL: versioned (optimistic) writes, row locks
// in a canonical order, idempotent create, fenced writes,
// driver-independent error classes and a transaction runner that retries
// what can be retried.
//
// Every function takes the smallest thing it needs: a [DB] (satisfied by
// *sql.DB, *sql.Tx and *sql.Conn) for single statements, a *sql.Tx for row
// locks (so a lock outside a transaction, which would protect nothing, does
// not compile), a *sql.DB for [RunTx]. Table and column names are validated
// by [ValidIdentifier] and quoted; values are always bound as parameters.
// The dialect is detected from a *sql.DB or *sql.Conn, or set in
// [Table].Dialect (required with a *sql.Tx). Nothing in the package holds
// state: all functions are safe for concurrent use as far as their DB is.
//
// # pgx's native API
//
// Each operation has a Pgx twin that takes pgx's handles instead of
// database/sql's, so a service on *pgxpool.Pool needs no *sql.DB:
// [PgxUpdateVersioned], [PgxDeleteVersioned], [PgxAdd], [PgxFencedUpdate]
// and [PgxCreateOrGet] take a [PgxDB] (*pgxpool.Pool, *pgx.Conn or
// pgx.Tx); [PgxLockKeys] and [PgxLockRow] take a pgx.Tx, so they too refuse
// at compile time to run outside a transaction; [PgxRunTx] takes a
// [PgxBeginner] (*pgxpool.Pool or *pgx.Conn) and gives fn a pgx.Tx.
// [Retry], [Classify] and the error types serve both APIs: pgx returns
// *pgconn.PgError, which Classify reads.
//
// Both APIs build each statement with the same code and run it through one
// small internal interface (run a statement, read one row) with an adapter
// per driver API, so they send the same SQL in the same number of round
// trips and report the same errors. The twins live in this package rather
// than in a subpackage because they share its unexported statement
// builders; the package links pgx for error classification anyway, so they
// add no dependency.
//
// # Choosing a technique
//
// The lost update (two requests read 17, both write 18) has four fixes here:
//
//   - [Add]: one conditional UPDATE (col = col + delta WHERE col >= bound).
//     No lock held between statements, no retry. Use it whenever the change
//     can be expressed in SQL.
//   - [UpdateVersioned] with [Retry]: read the row and its version, compute,
//     write only if the version is unchanged; on [ErrConflict] read again.
//     Good at low contention and across requests (the version travels to the
//     client and back); under heavy contention the retries cost more than
//     waiting for a lock.
//   - [LockKeys] / [LockRow] inside [RunTx]: SELECT ... FOR UPDATE, then
//     read-modify-write while others wait. Integrity first; several rows are
//     locked in one canonical order so callers do not deadlock.
//   - [FencedUpdate]: when the exclusion comes from a lease outside the
//     database (package lock), the write carries the lease's fencing token
//     and a stale holder's write is refused.
//
// Duplicate creation (check-then-insert lets two creators pass the check) is
// fixed by [CreateOrGet], which returns the existing row to the second
// creator, or by locking a parent row first so that creator B waits for
// creator A (see the ParentRowLock example).
//
// # SQLite
//
// SQLite has no row locks: one writer at a time holds the database's write
// lock until commit. [LockKeys] and [LockRow] on SQLite take that lock (what
// BEGIN IMMEDIATE does) and then read the rows; NOWAIT and lock timeouts map
// onto busy_timeout. A deferred transaction that has already read cannot
// take the write lock after another connection committed
// (SQLITE_BUSY_SNAPSHOT): open write transactions with "_txlock=immediate" in
// the modernc.org/sqlite DSN, which makes every non-read-only BeginTx a
// BEGIN IMMEDIATE, and set busy_timeout ("_pragma=busy_timeout(5000)").
//
// # Error classification
//
// [Classify] reads the drivers' typed errors with errors.As (so wrapped and
// joined errors classify) and never looks at message text. Retry is what must
// be run again: the statement only, or the whole transaction.
//
//	class                  PostgreSQL (SQLSTATE)      MySQL/MariaDB (error number)     SQLite (extended result code)
//	---------------------  -------------------------  -------------------------------  ---------------------------------
//	UniqueViolation        23505 unique_violation     1062 ER_DUP_ENTRY,               2067 CONSTRAINT_UNIQUE,
//	                       (Constraint = its name)    1586 ER_DUP_ENTRY_WITH_KEY_NAME  1555 CONSTRAINT_PRIMARYKEY
//	                       retry: none                retry: none                      retry: none
//	Deadlock               40P01 deadlock_detected    1213 ER_LOCK_DEADLOCK            (shows as Busy)
//	                       retry: transaction         retry: transaction
//	SerializationFailure   40001                      1020 ER_CHECKREAD (MariaDB       517 BUSY_SNAPSHOT
//	                       serialization_failure      innodb_snapshot_isolation)
//	                       retry: transaction         retry: transaction               retry: transaction
//	LockTimeout            55P03 lock_not_available   1205 ER_LOCK_WAIT_TIMEOUT        (shows as Busy)
//	                       (lock_timeout and NOWAIT)  (and MariaDB NOWAIT),
//	                                                  3572 ER_LOCK_NOWAIT (MySQL 8)
//	                       retry: transaction         retry: statement
//	Busy                   -                          -                                5 BUSY, 261 BUSY_RECOVERY,
//	                                                                                   773 BUSY_TIMEOUT, 6 LOCKED
//	                                                                                   and its extended codes
//	                                                                                   retry: transaction
//
// Notes: PostgreSQL aborts the whole transaction on any error, so every
// class there is transaction-scoped. MySQL rolls back only the statement on a
// lock wait timeout (unless innodb_rollback_on_timeout is on) but the whole
// transaction on a deadlock. PostgreSQL 57014 query_canceled is deliberately
// not a lock timeout: it is also what a cancelled context produces through
// pgx, and what statement_timeout produces for any slow statement. MySQL and
// SQLite report the violated constraint only inside the message, so
// Constraint is empty there.
//
// [RunTx] retries Deadlock, SerializationFailure and Busy; it does not retry
// lock timeouts (the caller chose to stop waiting) or a COMMIT whose outcome
// is unknown ([ErrCommitUnknown]).
package sqlcc
