package sqlcc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// UpdateVersioned sets the given columns of the row whose key is key, but only
// if its version column still holds expect, and bumps the version by one in
// the same statement:
//
//	UPDATE t SET c1 = $1, ..., version = version + 1 WHERE key = $n AND version = $m
//
// It returns the new version (expect+1). When no row matches it never
// reports success: it reads the row again and returns a *[ConflictError]
// (matching [ErrConflict]) carrying the current version, or Gone when the row
// no longer exists. A zero expect is checked like any other value. With no
// assignments only the version is bumped (Rails' touch, checked).
//
// db may be a *sql.DB, *sql.Tx or *sql.Conn; UpdateVersioned is as safe for
// concurrent use as db is. Driver errors are returned wrapped; see [Classify].
func UpdateVersioned(ctx context.Context, db DB, t Table, key any, expect int64, set ...Assignment) (int64, error) {
	d, err := resolveDialect(t.Dialect, db)
	if err != nil {
		return 0, err
	}
	return updateVersioned(ctx, sqlQuerier{db}, d, t, key, expect, set)
}

func updateVersioned(ctx context.Context, db querier, d Dialect, t Table, key any, expect int64, set []Assignment) (int64, error) {
	s := &stmt{d: d}
	s.raw("UPDATE ").ident(t.Name).raw(" SET ")
	for _, a := range set {
		if a.Column == t.version() {
			return 0, fmt.Errorf("%w: UpdateVersioned sets the version column %q itself", ErrInvalidOptions, a.Column)
		}
		s.ident(a.Column).raw(" = ").arg(a.Value).raw(", ")
	}
	s.ident(t.version()).raw(" = ").ident(t.version()).raw(" + 1 WHERE ").
		ident(t.key()).raw(" = ").arg(key).raw(" AND ").ident(t.version()).raw(" = ").arg(expect)
	if s.err != nil {
		return 0, s.err
	}
	res, err := db.exec(ctx, s.String(), s.args...)
	if err != nil {
		return 0, fmt.Errorf("sqlcc: update %s: %w", t.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlcc: update %s: %w", t.Name, err)
	}
	if n == 1 {
		return expect + 1, nil
	}
	return 0, conflict(ctx, db, d, t, key, expect)
}

// DeleteVersioned deletes the row whose key is key only if its version
// column holds expect. Like [UpdateVersioned], no matching row is a
// *[ConflictError] (Gone when the row was already deleted), never a silent
// success.
func DeleteVersioned(ctx context.Context, db DB, t Table, key any, expect int64) error {
	d, err := resolveDialect(t.Dialect, db)
	if err != nil {
		return err
	}
	return deleteVersioned(ctx, sqlQuerier{db}, d, t, key, expect)
}

func deleteVersioned(ctx context.Context, db querier, d Dialect, t Table, key any, expect int64) error {
	s := &stmt{d: d}
	s.raw("DELETE FROM ").ident(t.Name).raw(" WHERE ").ident(t.key()).raw(" = ").arg(key).
		raw(" AND ").ident(t.version()).raw(" = ").arg(expect)
	if s.err != nil {
		return s.err
	}
	res, err := db.exec(ctx, s.String(), s.args...)
	if err != nil {
		return fmt.Errorf("sqlcc: delete %s: %w", t.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlcc: delete %s: %w", t.Name, err)
	}
	if n == 1 {
		return nil
	}
	return conflict(ctx, db, d, t, key, expect)
}

// conflict reads the current version after a versioned write matched no row.
func conflict(ctx context.Context, db querier, d Dialect, t Table, key any, expect int64) error {
	s := &stmt{d: d}
	s.raw("SELECT ").ident(t.version()).raw(" FROM ").ident(t.Name).raw(" WHERE ").ident(t.key()).raw(" = ").arg(key)
	var cur int64
	err := db.queryRow(ctx, s.String(), s.args...).Scan(&cur)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return &ConflictError{Table: t.Name, Key: key, Expected: expect, Gone: true}
	case err != nil:
		return fmt.Errorf("sqlcc: read version of %s %v after conflict: %w", t.Name, key, errors.Join(ErrConflict, err))
	}
	return &ConflictError{Table: t.Name, Key: key, Expected: expect, Current: cur}
}

// Add adds delta to an integer column of one row in a single conditional
// statement and returns the column's new value. The update happens only if
// the result stays at or above min (pass math.MinInt64 for no bound):
//
//	UPDATE t SET col = col + $1 WHERE key = $2 AND col >= $3   -- $3 = min - delta
//
// This is the atomic alternative to read-modify-write: no lock is held
// between statements and no retry is needed. It returns [ErrOutOfRange] when
// the bound would be crossed and [ErrNotFound] when the row does not exist;
// in both cases nothing changed. PostgreSQL and SQLite read the new value
// with RETURNING; MySQL through LAST_INSERT_ID(expr), which the driver
// returns with the statement's result, so it is also one round trip (and
// LAST_INSERT_ID() of that connection is changed). LAST_INSERT_ID is
// unsigned, so on MySQL a new value below zero fails the statement (error
// 1264, out of range) and changes nothing, whatever min says. A zero delta is
// [ErrInvalidOptions]. Add is as safe for concurrent use as db is.
func Add(ctx context.Context, db DB, t Table, key any, column string, delta int64, min int64) (int64, error) {
	d, err := resolveDialect(t.Dialect, db)
	if err != nil {
		return 0, err
	}
	return add(ctx, sqlQuerier{db}, d, t, key, column, delta, min)
}

func add(ctx context.Context, db querier, d Dialect, t Table, key any, column string, delta int64, min int64) (int64, error) {
	if delta == 0 {
		return 0, fmt.Errorf("%w: Add with a zero delta", ErrInvalidOptions)
	}
	// col + delta >= min  <=>  col >= min - delta, computed without overflow.
	threshold, bounded := int64(0), true
	switch {
	case min == math.MinInt64 && delta >= 0, delta > 0 && min < math.MinInt64+delta:
		bounded = false // always satisfied
	case delta < 0 && min > math.MaxInt64+delta:
		return 0, fmt.Errorf("%w: %s %v: %s %+d below %d", ErrOutOfRange, t.Name, key, column, delta, min)
	default:
		threshold = min - delta
	}
	s := &stmt{d: d}
	s.raw("UPDATE ").ident(t.Name).raw(" SET ").ident(column).raw(" = ")
	if d == MySQL {
		s.raw("LAST_INSERT_ID(").ident(column).raw(" + ").arg(delta).raw(")")
	} else {
		s.ident(column).raw(" + ").arg(delta)
	}
	s.raw(" WHERE ").ident(t.key()).raw(" = ").arg(key)
	if bounded {
		s.raw(" AND ").ident(column).raw(" >= ").arg(threshold)
	}
	if d != MySQL {
		s.raw(" RETURNING ").ident(column)
	}
	if s.err != nil {
		return 0, s.err
	}
	var v int64
	if d == MySQL {
		res, err := db.exec(ctx, s.String(), s.args...)
		if err != nil {
			return 0, fmt.Errorf("sqlcc: add to %s.%s: %w", t.Name, column, err)
		}
		n, err := res.RowsAffected()
		if err == nil && n == 1 {
			v, err = res.LastInsertId()
		}
		if err != nil {
			return 0, fmt.Errorf("sqlcc: add to %s.%s: %w", t.Name, column, err)
		}
		if n == 1 {
			return v, nil
		}
	} else {
		err := db.queryRow(ctx, s.String(), s.args...).Scan(&v)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("sqlcc: add to %s.%s: %w", t.Name, column, err)
		}
	}
	// No row changed: tell a missing row from a crossed bound.
	e := &stmt{d: d}
	e.raw("SELECT 1 FROM ").ident(t.Name).raw(" WHERE ").ident(t.key()).raw(" = ").arg(key)
	var one int
	switch err := db.queryRow(ctx, e.String(), e.args...).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("%w: %s %v", ErrNotFound, t.Name, key)
	case err != nil:
		return 0, fmt.Errorf("sqlcc: add to %s.%s: %w", t.Name, column, err)
	}
	return 0, fmt.Errorf("%w: %s %v: %s %+d below %d", ErrOutOfRange, t.Name, key, column, delta, min)
}

// RetryOptions bounds [Retry]. The zero value is valid.
type RetryOptions struct {
	// Attempts is the maximum number of calls of the function, the first
	// included. Zero: 10. Negative: invalid.
	Attempts int
	// BaseDelay is the backoff before the second attempt; each further wait
	// doubles up to MaxDelay, and the actual wait is uniformly random between
	// zero and that value (full jitter). Zero: 2ms. Negative: invalid.
	BaseDelay time.Duration
	// MaxDelay caps the backoff. Zero: 200ms. Negative or below BaseDelay:
	// invalid.
	MaxDelay time.Duration
}

func (o RetryOptions) withDefaults() (RetryOptions, error) {
	if o.Attempts < 0 || o.BaseDelay < 0 || o.MaxDelay < 0 {
		return o, fmt.Errorf("%w: negative attempts or delay in %+v", ErrInvalidOptions, o)
	}
	if o.Attempts == 0 {
		o.Attempts = 10
	}
	if o.BaseDelay == 0 {
		o.BaseDelay = 2 * time.Millisecond
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = max(200*time.Millisecond, o.BaseDelay)
	}
	if o.MaxDelay < o.BaseDelay {
		return o, fmt.Errorf("%w: MaxDelay %v below BaseDelay %v", ErrInvalidOptions, o.MaxDelay, o.BaseDelay)
	}
	return o, nil
}

// Retry calls fn until it returns an error that does not match [ErrConflict]
// (nil included), the attempts are used up, or ctx ends. fn must re-read the
// row and re-apply its change each time: a retry with the old version would
// only conflict again. Between attempts Retry sleeps with jittered
// exponential backoff. It returns fn's last error; when ctx ends during a
// wait, ctx's error joined with fn's last error. Retry is safe for concurrent
// use; invalid options return [ErrInvalidOptions] without calling fn.
func Retry(ctx context.Context, opts RetryOptions, fn func(ctx context.Context) error) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	return retry(ctx, o.Attempts, o.BaseDelay, o.MaxDelay, fn, func(err error) bool { return errors.Is(err, ErrConflict) })
}

func retry(ctx context.Context, attempts int, base, maxd time.Duration, fn func(context.Context) error, again func(error) bool) error {
	for i := 0; ; i++ {
		err := fn(ctx)
		if err == nil || !again(err) || i+1 >= attempts {
			return err
		}
		if werr := sleep(ctx, backoff(i, base, maxd)); werr != nil {
			return errors.Join(werr, err)
		}
	}
}

// backoff returns a full-jitter wait before attempt i+2.
func backoff(i int, base, maxd time.Duration) time.Duration {
	c := base
	for ; i > 0 && c < maxd; i-- {
		c *= 2
	}
	c = min(c, maxd)
	if c <= 0 {
		return 0
	}
	return rand.N(c + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
