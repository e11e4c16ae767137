package sqlcc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
)

// FencedUpdate sets the given columns of the row whose key is key only if
// the token is not older than the one stored in the row's fence column, and
// stores token there in the same statement:
//
//	UPDATE t SET c1 = $1, ..., fence = $t WHERE key = $k AND (fence IS NULL OR fence <= $t)
//
// token is a lock's fencing token (strictly greater for every later holder
// of the lock, such as lock.Token). A holder that paused past its lease and
// lost the lock to a newer holder who already wrote gets a
// *[StaleTokenError] (matching [ErrStaleToken]) and changes nothing. The
// comparison is <=, not <, so one holder may write several times with its
// token. The fence column is an integer that starts NULL or 0; tokens above
// math.MaxInt64 are [ErrInvalidOptions] because SQL integers are signed.
// A missing row is [ErrNotFound]. FencedUpdate is as safe for concurrent use
// as db is.
func FencedUpdate(ctx context.Context, db DB, t Table, key any, token uint64, set ...Assignment) error {
	d, err := resolveDialect(t.Dialect, db)
	if err != nil {
		return err
	}
	return fencedUpdate(ctx, sqlQuerier{db}, d, t, key, token, set)
}

func fencedUpdate(ctx context.Context, db querier, d Dialect, t Table, key any, token uint64, set []Assignment) error {
	if token > math.MaxInt64 {
		return fmt.Errorf("%w: fencing token %d above MaxInt64", ErrInvalidOptions, token)
	}
	tok := int64(token)
	s := &stmt{d: d}
	s.raw("UPDATE ").ident(t.Name).raw(" SET ")
	for _, a := range set {
		if a.Column == t.fence() {
			return fmt.Errorf("%w: FencedUpdate sets the fence column %q itself", ErrInvalidOptions, a.Column)
		}
		s.ident(a.Column).raw(" = ").arg(a.Value).raw(", ")
	}
	s.ident(t.fence()).raw(" = ").arg(tok).raw(" WHERE ").ident(t.key()).raw(" = ").arg(key).
		raw(" AND (").ident(t.fence()).raw(" IS NULL OR ").ident(t.fence()).raw(" <= ").arg(tok).raw(")")
	if s.err != nil {
		return s.err
	}
	res, err := db.exec(ctx, s.String(), s.args...)
	if err != nil {
		return fmt.Errorf("sqlcc: fenced update %s: %w", t.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlcc: fenced update %s: %w", t.Name, err)
	}
	if n == 1 {
		return nil
	}
	q := &stmt{d: d}
	q.raw("SELECT ").ident(t.fence()).raw(" FROM ").ident(t.Name).raw(" WHERE ").ident(t.key()).raw(" = ").arg(key)
	var cur sql.NullInt64
	switch err := db.queryRow(ctx, q.String(), q.args...).Scan(&cur); {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %s %v", ErrNotFound, t.Name, key)
	case err != nil:
		return fmt.Errorf("sqlcc: read fence of %s %v: %w", t.Name, key, err)
	}
	if cur.Int64 <= tok {
		// MySQL counts changed rows: the same holder writing the same
		// values again matched but changed nothing.
		return nil
	}
	return &StaleTokenError{Table: t.Name, Key: key, Token: token, Current: uint64(cur.Int64)}
}
