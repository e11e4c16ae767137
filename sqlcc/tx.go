package sqlcc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TxOptions configures [RunTx]. The zero value is valid.
type TxOptions struct {
	// Isolation is the transaction's isolation level. Zero: the driver's
	// default (READ COMMITTED on PostgreSQL, REPEATABLE READ on MySQL,
	// SERIALIZABLE on SQLite).
	Isolation sql.IsolationLevel
	// ReadOnly starts a read-only transaction. On SQLite with
	// "_txlock=immediate" this also makes modernc.org/sqlite use a deferred
	// BEGIN, so the transaction does not take the write lock.
	ReadOnly bool
	// Attempts is the maximum number of times fn runs. Zero: 5. Negative:
	// invalid.
	Attempts int
	// BaseDelay and MaxDelay shape the jittered backoff between attempts as
	// in [RetryOptions]. Zero: 2ms and 200ms. Negative: invalid.
	BaseDelay, MaxDelay time.Duration
}

// RunTx runs fn in a transaction and commits it if fn returns nil, rolling
// back otherwise. When fn or the commit fails with a deadlock, a
// serialization failure or SQLite busy (the transient errors that require
// running the whole transaction again: [Classify] with Retry
// [RetryTransaction], except lock timeouts, which RunTx leaves to the
// caller), RunTx rolls back, waits a jittered backoff and runs fn again in a
// new transaction, up to opts.Attempts times. fn must therefore do nothing
// outside the transaction that cannot be repeated, and must return the
// errors it gets from tx (wrapped is fine) rather than swallow them.
//
// If COMMIT fails without an answer from the server (the connection broke),
// the transaction may or may not have committed: RunTx does not run fn
// again and returns an error matching [ErrCommitUnknown] and wrapping the
// driver's error. A COMMIT the server rejected is a definite failure and is
// retried or returned like any other error.
//
// The last error is returned wrapped, so errors.Is/As and [Classify] see it.
// RunTx is safe for concurrent use; invalid options return
// [ErrInvalidOptions] without starting a transaction.
func RunTx(ctx context.Context, db *sql.DB, opts TxOptions, fn func(ctx context.Context, tx *sql.Tx) error) error {
	ro, err := opts.retryOptions()
	if err != nil {
		return err
	}
	txo := &sql.TxOptions{Isolation: opts.Isolation, ReadOnly: opts.ReadOnly}
	return runTx(ctx, ro, func(ctx context.Context) error {
		tx, err := db.BeginTx(ctx, txo)
		if err != nil {
			return fmt.Errorf("sqlcc: begin: %w", err)
		}
		return finishTx(ctx, fn(ctx, tx), tx.Rollback, tx.Commit)
	})
}

// retryOptions validates the attempts and backoff of a transaction runner.
func (opts TxOptions) retryOptions() (RetryOptions, error) {
	if opts.Attempts < 0 {
		return RetryOptions{}, fmt.Errorf("%w: negative Attempts %d", ErrInvalidOptions, opts.Attempts)
	}
	if opts.Attempts == 0 {
		opts.Attempts = 5
	}
	return RetryOptions{Attempts: opts.Attempts, BaseDelay: opts.BaseDelay, MaxDelay: opts.MaxDelay}.withDefaults()
}

// runTx runs once, which runs one transaction from begin to end, again after
// each transient failure, as [RunTx] describes.
func runTx(ctx context.Context, ro RetryOptions, once func(ctx context.Context) error) error {
	attempt := 0
	err := retry(ctx, ro.Attempts, ro.BaseDelay, ro.MaxDelay, func(ctx context.Context) error {
		attempt++
		return once(ctx)
	}, retryableTx)
	if err != nil && attempt > 1 && retryableTx(err) {
		return fmt.Errorf("sqlcc: transaction failed after %d attempts: %w", attempt, err)
	}
	return err
}

func retryableTx(err error) bool {
	if errors.Is(err, ErrCommitUnknown) {
		return false
	}
	switch Classify(err).Class {
	case ClassDeadlock, ClassSerializationFailure, ClassBusy:
		return true
	}
	return false
}

// finishTx ends a transaction whose function returned fnErr: it rolls back
// if fnErr is set or ctx has ended, and otherwise commits, telling a COMMIT
// that surely failed from one whose outcome is unknown.
func finishTx(ctx context.Context, fnErr error, rollback, commit func() error) error {
	if fnErr != nil {
		_ = rollback()
		return fnErr
	}
	if err := ctx.Err(); err != nil {
		// Never commit work whose context ended: database/sql would roll
		// it back by itself, and pgx would send COMMIT on a dead context.
		_ = rollback()
		return err
	}
	err := commit()
	if err == nil {
		return nil
	}
	if commitFailed(err) {
		return fmt.Errorf("sqlcc: commit: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrCommitUnknown, err)
}

// commitFailed reports whether a COMMIT error means the transaction surely
// did not commit: the server rejected the COMMIT itself, or the transaction
// had already ended. An error that ends the session (PostgreSQL FATAL or
// PANIC, connection-class SQLSTATEs, MySQL's killed connection or shutdown)
// can arrive after the commit record was written, so it, like every I/O
// error, leaves the outcome unknown.
func commitFailed(err error) bool {
	if errors.Is(err, pgx.ErrTxCommitRollback) || errors.Is(err, sql.ErrTxDone) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Severity == "FATAL" || pe.Severity == "PANIC",
			strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57P"):
			return false
		}
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1053, 1152, 1927: // server shutdown, aborted connection, connection killed
			return false
		}
		return true
	}
	return Classify(err).Dialect == SQLite
}
