package sqlcc

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// LockMode says what a row lock does when another transaction holds the row.
type LockMode int

const (
	// Wait waits for the lock (up to LockOptions.Timeout, if set).
	Wait LockMode = iota
	// NoWait fails at once with an error for which [IsLockTimeout] is true
	// ([IsBusy] on SQLite).
	NoWait
	// SkipLocked leaves out rows that are locked by others.
	SkipLocked
)

// LockOptions configures [LockKeys] and [LockRow]. The zero value waits as
// long as the engine's own setting allows.
type LockOptions struct {
	// Mode is the behaviour on a locked row. Zero: [Wait].
	Mode LockMode
	// Timeout bounds the wait of Mode [Wait]. Zero: the engine's current
	// setting (PostgreSQL lock_timeout, MySQL innodb_lock_wait_timeout,
	// SQLite busy_timeout). It is applied for the locking statements only and
	// the previous setting restored afterwards: PostgreSQL set_config(...,
	// true), MySQL's session variable (whole seconds, rounded up), SQLite's
	// PRAGMA busy_timeout. Negative, or set with another Mode: invalid.
	Timeout time.Duration
}

func (o LockOptions) validate() error {
	if o.Mode < Wait || o.Mode > SkipLocked {
		return fmt.Errorf("%w: lock mode %d", ErrInvalidOptions, int(o.Mode))
	}
	if o.Timeout < 0 || (o.Timeout > 0 && o.Mode != Wait) {
		return fmt.Errorf("%w: lock timeout %v with mode %d", ErrInvalidOptions, o.Timeout, int(o.Mode))
	}
	return nil
}

// LockKeys locks the rows of t whose key column holds one of keys, for the
// rest of tx (SELECT ... FOR UPDATE), and returns the keys it locked in the
// order it locked them: ascending, without duplicates. Keys with no row are
// not in the result; with [SkipLocked], neither are rows locked by others.
//
// Deadlocks between callers are avoided by that canonical order: the keys are
// sorted and deduplicated, then locked one statement per key, so two
// transactions locking overlapping sets always meet on the lowest shared key
// first, whatever order the caller passed. (Locking is one round trip per
// key; for many rows, lock one aggregate root instead.)
//
// The locks belong to tx and are released by its Commit or Rollback; a
// *sql.Tx is required so that locking outside a transaction, which would
// protect nothing, does not compile. On MySQL read the locked rows with
// locking reads (or [LockRow]) or only after locking: a plain SELECT issued
// earlier in a REPEATABLE READ transaction fixed a snapshot that later plain
// SELECTs keep returning.
//
// SQLite has no row locks. There LockKeys takes the database's write lock
// (the lock BEGIN IMMEDIATE takes; all writers wait, readers in WAL mode do
// not), waiting per busy_timeout or Timeout; with NoWait a held lock is an
// error for which [IsBusy] is true; with SkipLocked a held lock returns no
// keys. If tx already read before a commit by another connection, the write
// lock cannot be taken at all (SQLITE_BUSY_SNAPSHOT,
// [IsSerializationFailure]) and the transaction must be retried: open write
// transactions on SQLite with "_txlock=immediate" in the DSN (modernc.org/
// sqlite then begins every non-read-only transaction with BEGIN IMMEDIATE) or
// call LockKeys first.
//
// Lock failures are returned wrapped; see [Classify]. On PostgreSQL any
// error leaves tx aborted.
func LockKeys[K cmp.Ordered](ctx context.Context, tx *sql.Tx, t Table, keys []K, opts LockOptions) ([]K, error) {
	if tx == nil {
		return nil, ErrNotInTx
	}
	d, err := resolveDialect(t.Dialect, tx)
	if err != nil {
		return nil, err
	}
	return lockKeys(ctx, sqlQuerier{tx}, d, t, keys, opts)
}

func lockKeys[K cmp.Ordered](ctx context.Context, tx querier, d Dialect, t Table, keys []K, opts LockOptions) ([]K, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	s := lockStmt(d, t, []string{t.key()}, opts.Mode)
	if s.err != nil {
		return nil, s.err
	}
	locked := make([]K, 0, len(sorted))
	err := withLockTimeout(ctx, tx, d, t, opts, func() error {
		for _, k := range sorted {
			var got K
			err := tx.queryRow(ctx, s.String(), k).Scan(&got)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("sqlcc: lock %s %v: %w", t.Name, k, err)
			}
			locked = append(locked, k)
		}
		return nil
	})
	if errors.Is(err, errSkipped) {
		return locked[:0], nil
	}
	return locked, err
}

// LockRow locks one row of t, like [LockKeys] with one key, and scans the
// given columns of the locked row into dest (one destination per column; no
// columns just locks). The values are read by the locking statement itself,
// so they are the latest committed ones on every engine. A missing row
// returns [ErrNotFound]; with [SkipLocked] so does a row locked by others.
func LockRow(ctx context.Context, tx *sql.Tx, t Table, key any, opts LockOptions, columns []string, dest ...any) error {
	if tx == nil {
		return ErrNotInTx
	}
	d, err := resolveDialect(t.Dialect, tx)
	if err != nil {
		return err
	}
	return lockRow(ctx, sqlQuerier{tx}, d, t, key, opts, columns, dest)
}

func lockRow(ctx context.Context, tx querier, d Dialect, t Table, key any, opts LockOptions, columns []string, dest []any) error {
	if err := opts.validate(); err != nil {
		return err
	}
	if len(columns) != len(dest) {
		return fmt.Errorf("%w: %d columns, %d destinations", ErrInvalidOptions, len(columns), len(dest))
	}
	cols := columns
	if len(cols) == 0 {
		cols = []string{t.key()}
		var k any
		dest = []any{&k}
	}
	s := lockStmt(d, t, cols, opts.Mode)
	if s.err != nil {
		return s.err
	}
	err := withLockTimeout(ctx, tx, d, t, opts, func() error {
		err := tx.queryRow(ctx, s.String(), key).Scan(dest...)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s %v", ErrNotFound, t.Name, key)
		}
		if err != nil {
			return fmt.Errorf("sqlcc: lock %s %v: %w", t.Name, key, err)
		}
		return nil
	})
	if errors.Is(err, errSkipped) {
		return fmt.Errorf("%w: %s %v (locked)", ErrNotFound, t.Name, key)
	}
	return err
}

// errSkipped reports that SQLite's write lock was held under SkipLocked.
var errSkipped = errors.New("sqlcc: skipped")

// lockStmt builds SELECT cols FROM t WHERE key = ? with the dialect's
// locking clause; the key is its only parameter.
func lockStmt(d Dialect, t Table, cols []string, mode LockMode) *stmt {
	s := &stmt{d: d}
	s.raw("SELECT ")
	for i, c := range cols {
		if i > 0 {
			s.raw(", ")
		}
		s.ident(c)
	}
	s.raw(" FROM ").ident(t.Name).raw(" WHERE ").ident(t.key()).raw(" = ")
	if d == Postgres {
		s.raw("$1")
	} else {
		s.raw("?")
	}
	if d != SQLite {
		s.raw(" FOR UPDATE")
		switch mode {
		case NoWait:
			s.raw(" NOWAIT")
		case SkipLocked:
			s.raw(" SKIP LOCKED")
		}
	}
	return s
}

// withLockTimeout runs lock with the engine's lock wait set per opts and
// restores the previous setting afterwards. On SQLite it first takes the
// database write lock.
func withLockTimeout(ctx context.Context, tx querier, d Dialect, t Table, opts LockOptions, lock func() error) (err error) {
	var get, set, restore string
	var val string
	switch d {
	case Postgres:
		if opts.Timeout > 0 {
			// One round trip reads the previous value and sets the new one:
			// OFFSET 0 keeps the subquery a plan node of its own, so
			// current_setting runs before the outer set_config.
			get = "SELECT p.prev, set_config('lock_timeout', $1, true) FROM (SELECT current_setting('lock_timeout') AS prev OFFSET 0) AS p"
			set = "SELECT set_config('lock_timeout', $1, true)"
			val = strconv.FormatInt(max(opts.Timeout.Milliseconds(), 1), 10) + "ms"
		}
	case MySQL:
		if opts.Timeout > 0 {
			get = "SELECT CAST(@@SESSION.innodb_lock_wait_timeout AS CHAR)"
			set = "SET SESSION innodb_lock_wait_timeout = CAST(? AS UNSIGNED)"
			val = strconv.FormatInt(int64((opts.Timeout+time.Second-1)/time.Second), 10)
		}
	case SQLite:
		// PRAGMA takes no parameters; the value is a formatted integer.
		switch {
		case opts.Mode != Wait:
			val = "0"
		case opts.Timeout > 0:
			val = strconv.FormatInt(max(opts.Timeout.Milliseconds(), 1), 10)
		}
		if val != "" {
			get = "PRAGMA busy_timeout"
			set = "PRAGMA busy_timeout = " + val
		}
	}
	if get != "" {
		var prev string
		if d == Postgres {
			var now string
			if err := tx.queryRow(ctx, get, val).Scan(&prev, &now); err != nil {
				return fmt.Errorf("sqlcc: set lock timeout: %w", err)
			}
		} else {
			if err := tx.queryRow(ctx, get).Scan(&prev); err != nil {
				return fmt.Errorf("sqlcc: read lock timeout: %w", err)
			}
			if err := execSetting(ctx, tx, d, set, val); err != nil {
				return fmt.Errorf("sqlcc: set lock timeout: %w", err)
			}
		}
		if d == SQLite {
			restore = "PRAGMA busy_timeout = " + prev
		} else {
			restore = set
		}
		defer func() {
			rerr := execSetting(context.WithoutCancel(ctx), tx, d, restore, prev)
			if err == nil && rerr != nil {
				err = fmt.Errorf("sqlcc: restore lock timeout: %w", rerr)
			}
		}()
	}
	if d == SQLite {
		// A write statement takes the database write lock when it starts,
		// even if it matches no row.
		s := &stmt{d: d}
		s.raw("UPDATE ").ident(t.Name).raw(" SET ").ident(t.key()).raw(" = ").ident(t.key()).raw(" WHERE 0")
		if s.err != nil {
			return s.err
		}
		if _, err := tx.exec(ctx, s.String()); err != nil {
			if opts.Mode == SkipLocked && IsBusy(err) {
				return errSkipped
			}
			return fmt.Errorf("sqlcc: lock %s (SQLite database write lock): %w", t.Name, err)
		}
	}
	return lock()
}

func execSetting(ctx context.Context, tx querier, d Dialect, q, val string) error {
	if d == SQLite {
		_, err := tx.exec(ctx, q)
		return err
	}
	_, err := tx.exec(ctx, q, val)
	return err
}
