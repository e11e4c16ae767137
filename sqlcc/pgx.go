package sqlcc

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PgxDB is the part of pgx's native API that sqlcc needs to run statements:
// *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it. The Pgx functions take it
// where their database/sql counterparts take a [DB], run the same
// statements, and report the same errors; functions that must run inside a
// transaction take a pgx.Tx instead, so a call outside one does not compile.
//
// pgx speaks only PostgreSQL: the Pgx functions use [Postgres] when
// Table.Dialect is zero and return [ErrInvalidOptions] for any other
// dialect. They do no I/O besides their statements (no dialect detection),
// and pgx's errors classify as database/sql's do (see [Classify]).
type PgxDB interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ PgxDB = (*pgx.Conn)(nil)
	_ PgxDB = pgx.Tx(nil)
)

// PgxBeginner starts transactions for [PgxRunTx]: *pgxpool.Pool and
// *pgx.Conn satisfy it. A pgx.Tx does not, so PgxRunTx cannot be run inside
// a transaction whose COMMIT it does not own.
type PgxBeginner interface {
	BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error)
}

var _ PgxBeginner = (*pgx.Conn)(nil)

// pgxDialect resolves a Table's dialect for the Pgx functions.
func pgxDialect(d Dialect) (Dialect, error) {
	switch d {
	case Unknown, Postgres:
		return Postgres, nil
	default:
		return Unknown, fmt.Errorf("%w: dialect %v through pgx, which speaks only PostgreSQL", ErrInvalidOptions, d)
	}
}

// PgxUpdateVersioned is [UpdateVersioned] on pgx's native API: one UPDATE
// that sets the columns and bumps the version only if it still holds
// expect; it returns the new version, or a *[ConflictError] carrying the
// current one (or Gone). db may be a *pgxpool.Pool, *pgx.Conn or pgx.Tx; it
// is as safe for concurrent use as db is.
func PgxUpdateVersioned(ctx context.Context, db PgxDB, t Table, key any, expect int64, set ...Assignment) (int64, error) {
	d, err := pgxDialect(t.Dialect)
	if err != nil {
		return 0, err
	}
	return updateVersioned(ctx, pgxQuerier{db}, d, t, key, expect, set)
}

// PgxDeleteVersioned is [DeleteVersioned] on pgx's native API: the row is
// deleted only if its version is expect; otherwise a *[ConflictError].
func PgxDeleteVersioned(ctx context.Context, db PgxDB, t Table, key any, expect int64) error {
	d, err := pgxDialect(t.Dialect)
	if err != nil {
		return err
	}
	return deleteVersioned(ctx, pgxQuerier{db}, d, t, key, expect)
}

// PgxAdd is [Add] on pgx's native API: one conditional UPDATE ... RETURNING
// that adds delta to column if the result stays at or above min, and
// returns the new value; [ErrOutOfRange] or [ErrNotFound] when nothing
// changed.
func PgxAdd(ctx context.Context, db PgxDB, t Table, key any, column string, delta int64, min int64) (int64, error) {
	d, err := pgxDialect(t.Dialect)
	if err != nil {
		return 0, err
	}
	return add(ctx, pgxQuerier{db}, d, t, key, column, delta, min)
}

// PgxFencedUpdate is [FencedUpdate] on pgx's native API: the columns are set
// only if token is not older than the row's fence, which is set to token in
// the same statement; a stale token is a *[StaleTokenError].
func PgxFencedUpdate(ctx context.Context, db PgxDB, t Table, key any, token uint64, set ...Assignment) error {
	d, err := pgxDialect(t.Dialect)
	if err != nil {
		return err
	}
	return fencedUpdate(ctx, pgxQuerier{db}, d, t, key, token, set)
}

// PgxCreateOrGet is [CreateOrGet] on pgx's native API: INSERT ... ON
// CONFLICT (unique) DO NOTHING RETURNING ..., then SELECT when another
// caller created the row first. It scans r.Returning into dest and reports
// whether this call created the row.
func PgxCreateOrGet(ctx context.Context, db PgxDB, r Row, dest ...any) (created bool, err error) {
	d, err := pgxDialect(r.Table.Dialect)
	if err != nil {
		return false, err
	}
	return createOrGet(ctx, pgxQuerier{db}, d, r, dest)
}

// PgxLockKeys is [LockKeys] on pgx's native API: it locks the rows whose
// keys are in keys, one SELECT ... FOR UPDATE per key in ascending order
// without duplicates, and returns the keys it locked. The locks belong to
// tx until its Commit or Rollback; a pgx.Tx is required, so locking through
// a pool or a bare connection does not compile. A nil tx is [ErrNotInTx].
// Any error leaves tx aborted.
func PgxLockKeys[K cmp.Ordered](ctx context.Context, tx pgx.Tx, t Table, keys []K, opts LockOptions) ([]K, error) {
	if tx == nil {
		return nil, ErrNotInTx
	}
	d, err := pgxDialect(t.Dialect)
	if err != nil {
		return nil, err
	}
	return lockKeys(ctx, pgxQuerier{tx}, d, t, keys, opts)
}

// PgxLockRow is [LockRow] on pgx's native API: it locks one row for the rest
// of tx and scans columns of the locked row into dest. A missing row, or
// with [SkipLocked] a row locked by others, is [ErrNotFound].
func PgxLockRow(ctx context.Context, tx pgx.Tx, t Table, key any, opts LockOptions, columns []string, dest ...any) error {
	if tx == nil {
		return ErrNotInTx
	}
	d, err := pgxDialect(t.Dialect)
	if err != nil {
		return err
	}
	return lockRow(ctx, pgxQuerier{tx}, d, t, key, opts, columns, dest)
}

// PgxTxOptions configures [PgxRunTx]. The zero value is valid.
type PgxTxOptions struct {
	// Tx is passed to BeginTx: isolation level, access mode, deferrable
	// mode. Zero: the server's defaults (READ COMMITTED, read-write).
	Tx pgx.TxOptions
	// Attempts is the maximum number of times fn runs. Zero: 5. Negative:
	// invalid.
	Attempts int
	// BaseDelay and MaxDelay shape the jittered backoff between attempts as
	// in [RetryOptions]. Zero: 2ms and 200ms. Negative: invalid.
	BaseDelay, MaxDelay time.Duration
}

// PgxRunTx is [RunTx] on pgx's native API: it runs fn in a transaction begun
// on db (a *pgxpool.Pool or *pgx.Conn) and commits it if fn returns nil,
// rolling back otherwise. A deadlock or serialization failure (from fn or
// from COMMIT) rolls back and runs fn again in a new transaction after a
// jittered backoff, up to opts.Attempts times; lock timeouts are returned.
// A COMMIT that fails without an answer from the server returns an error
// matching [ErrCommitUnknown] and fn is not run again. fn must do nothing
// outside tx that cannot be repeated, and must return the errors it gets
// from tx. PgxRunTx is as safe for concurrent use as db is (a *pgx.Conn is
// not); invalid options return [ErrInvalidOptions] without beginning.
func PgxRunTx(ctx context.Context, db PgxBeginner, opts PgxTxOptions, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ro, err := TxOptions{Attempts: opts.Attempts, BaseDelay: opts.BaseDelay, MaxDelay: opts.MaxDelay}.retryOptions()
	if err != nil {
		return err
	}
	return runTx(ctx, ro, func(ctx context.Context) error {
		tx, err := db.BeginTx(ctx, opts.Tx)
		if err != nil {
			return fmt.Errorf("sqlcc: begin: %w", err)
		}
		return finishTx(ctx, fn(ctx, tx),
			func() error { return tx.Rollback(ctx) },
			func() error { return tx.Commit(ctx) })
	})
}
