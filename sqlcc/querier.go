package sqlcc

import (
	"context"
	"database/sql"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// querier is how an operation runs its statements. Every operation builds
// its SQL once and runs it through a querier; sqlQuerier adapts
// database/sql (a [DB]) and pgxQuerier adapts pgx's native API (a [PgxDB]),
// so neither driver API has a copy of any statement.
type querier interface {
	// exec runs a statement that returns no rows.
	exec(ctx context.Context, query string, args ...any) (sql.Result, error)
	// queryRow runs a statement that returns at most one row. Scan returns
	// an error matching sql.ErrNoRows when there is none (pgx.ErrNoRows
	// matches it too).
	queryRow(ctx context.Context, query string, args ...any) scanner
}

// scanner is a row: *sql.Row and pgx.Row satisfy it.
type scanner interface {
	Scan(dest ...any) error
}

// sqlQuerier runs statements through database/sql.
type sqlQuerier struct{ db DB }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return q.db.ExecContext(ctx, query, args...)
}

func (q sqlQuerier) queryRow(ctx context.Context, query string, args ...any) scanner {
	return q.db.QueryRowContext(ctx, query, args...)
}

// pgxQuerier runs statements through pgx's native API.
type pgxQuerier struct{ db PgxDB }

func (q pgxQuerier) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	tag, err := q.db.Exec(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgxResult{tag}, nil
}

func (q pgxQuerier) queryRow(ctx context.Context, query string, args ...any) scanner {
	return q.db.QueryRow(ctx, query, args...)
}

// pgxResult is a pgx command tag as a sql.Result.
type pgxResult struct{ tag pgconn.CommandTag }

func (r pgxResult) RowsAffected() (int64, error) { return r.tag.RowsAffected(), nil }

// LastInsertId is not used on PostgreSQL, which returns values with RETURNING.
func (r pgxResult) LastInsertId() (int64, error) {
	return 0, errors.New("sqlcc: LastInsertId is not supported by pgx")
}
