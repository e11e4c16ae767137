package sqlcc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
)

// Row describes the row [CreateOrGet] inserts or finds.
type Row struct {
	// Table names the table (and dialect). Only Table.Name and
	// Table.Dialect are used.
	Table Table
	// Unique lists the columns of one unique key (or the primary key) of
	// Table. Each must also be a column of Values. Required.
	Unique []string
	// Values are the columns to insert. Required.
	Values []Assignment
	// Returning lists the columns scanned into CreateOrGet's dest.
	// Zero: Table.Key (default "id").
	Returning []string
}

// CreateOrGet inserts r, or, if a row with the same Unique values already
// exists, reads that row instead. It scans r.Returning of the inserted or
// existing row into dest and reports whether this call created it. Two
// callers racing to create the same row both succeed with the same row;
// exactly one gets created == true. (This is the fix for "Duplicate entry" on
// check-then-insert.)
//
// PostgreSQL and SQLite run INSERT ... ON CONFLICT (unique) DO NOTHING
// RETURNING ..., then SELECT when nothing was inserted. MySQL runs a plain
// INSERT and, on a duplicate-key error, SELECT ... LOCK IN SHARE MODE (a
// locking read sees the other transaction's committed row even in a
// REPEATABLE READ snapshot). INSERT IGNORE and ON DUPLICATE KEY UPDATE are
// not used: they also swallow a violation of a different unique key, or
// other errors, and then the row read back would not be the one meant.
// A violation of another unique key is returned as an error for which
// [IsUniqueViolation] is true.
//
// If the existing row is deleted between the insert and the read, the insert
// is tried again, up to 5 times, then [ErrVanished]. db may be a *sql.DB,
// *sql.Tx or *sql.Conn. On PostgreSQL, inside a REPEATABLE READ or
// SERIALIZABLE transaction, a conflict with a row this snapshot cannot see is
// a serialization failure (retry the transaction, e.g. with [RunTx]).
func CreateOrGet(ctx context.Context, db DB, r Row, dest ...any) (created bool, err error) {
	d, err := resolveDialect(r.Table.Dialect, db)
	if err != nil {
		return false, err
	}
	return createOrGet(ctx, sqlQuerier{db}, d, r, dest)
}

func createOrGet(ctx context.Context, db querier, d Dialect, r Row, dest []any) (created bool, err error) {
	ret := r.Returning
	if len(ret) == 0 {
		ret = []string{r.Table.key()}
	}
	if len(ret) != len(dest) {
		return false, fmt.Errorf("%w: %d returning columns, %d destinations", ErrInvalidOptions, len(ret), len(dest))
	}
	if len(r.Unique) == 0 || len(r.Values) == 0 {
		return false, fmt.Errorf("%w: CreateOrGet needs Unique and Values", ErrInvalidOptions)
	}
	uniq := make([]any, len(r.Unique))
	for i, u := range r.Unique {
		j := slices.IndexFunc(r.Values, func(a Assignment) bool { return a.Column == u })
		if j < 0 {
			return false, fmt.Errorf("%w: unique column %q has no value", ErrInvalidOptions, u)
		}
		uniq[i] = r.Values[j].Value
	}

	ins := &stmt{d: d}
	ins.raw("INSERT INTO ").ident(r.Table.Name).raw(" (")
	for i, a := range r.Values {
		if i > 0 {
			ins.raw(", ")
		}
		ins.ident(a.Column)
	}
	ins.raw(") VALUES (")
	for i, a := range r.Values {
		if i > 0 {
			ins.raw(", ")
		}
		ins.arg(a.Value)
	}
	ins.raw(")")
	if d != MySQL {
		ins.raw(" ON CONFLICT (")
		for i, u := range r.Unique {
			if i > 0 {
				ins.raw(", ")
			}
			ins.ident(u)
		}
		ins.raw(") DO NOTHING RETURNING ")
		columnList(ins, ret)
	}

	sel := &stmt{d: d}
	sel.raw("SELECT ")
	columnList(sel, ret)
	sel.raw(" FROM ").ident(r.Table.Name).raw(" WHERE ")
	for i, u := range r.Unique {
		if i > 0 {
			sel.raw(" AND ")
		}
		sel.ident(u).raw(" = ").arg(uniq[i])
	}
	if d == MySQL {
		sel.raw(" LOCK IN SHARE MODE")
	}
	if ins.err != nil {
		return false, ins.err
	}
	if sel.err != nil {
		return false, sel.err
	}

	const attempts = 5
	var dup error // MySQL: the last duplicate-key error whose row was not found
	for range attempts {
		if d == MySQL {
			_, err := db.exec(ctx, ins.String(), ins.args...)
			if err != nil && !IsUniqueViolation(err) {
				return false, fmt.Errorf("sqlcc: insert into %s: %w", r.Table.Name, err)
			}
			serr := db.queryRow(ctx, sel.String(), sel.args...).Scan(dest...)
			if serr == nil {
				return err == nil, nil
			}
			if !errors.Is(serr, sql.ErrNoRows) {
				return false, fmt.Errorf("sqlcc: read %s: %w", r.Table.Name, serr)
			}
			// Gone again, or the duplicate was on another unique key.
			dup = err
			continue
		}
		err := db.queryRow(ctx, ins.String(), ins.args...).Scan(dest...)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("sqlcc: insert into %s: %w", r.Table.Name, err)
		}
		err = db.queryRow(ctx, sel.String(), sel.args...).Scan(dest...)
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("sqlcc: read %s: %w", r.Table.Name, err)
		}
	}
	if dup != nil {
		return false, fmt.Errorf("sqlcc: insert into %s: %w", r.Table.Name, dup)
	}
	return false, fmt.Errorf("%w: %s after %d attempts", ErrVanished, r.Table.Name, attempts)
}

func columnList(s *stmt, cols []string) {
	for i, c := range cols {
		if i > 0 {
			s.raw(", ")
		}
		s.ident(c)
	}
}
