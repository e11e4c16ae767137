package sqlcc_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haita/haita/sqlcc"
)

// Compile-time proof that the three pgx handles are what the Pgx functions
// take (pgx.Tx and *pgx.Conn are asserted in the package itself).
var (
	_ sqlcc.PgxDB       = (*pgxpool.Pool)(nil)
	_ sqlcc.PgxBeginner = (*pgxpool.Pool)(nil)
)

// api runs sqlcc's operations through one driver API: the database/sql
// functions on a sqlcc.DB (or *sql.Tx), or the Pgx functions on a
// sqlcc.PgxDB (or pgx.Tx). The scenario tests call their operations through
// it, so the same test runs on both APIs. Plain statements (ExecContext,
// QueryRowContext) go through the same API.
type api struct {
	db  sqlcc.DB // database/sql: a *sql.DB or *sql.Tx
	stx *sql.Tx  // database/sql transaction, for the locking functions
	pdb sqlcc.PgxDB
	ptx pgx.Tx
}

// api returns the pool-level handle of e's API.
func (e *env) api() api {
	if e.pgx {
		return api{pdb: e.pool}
	}
	return api{db: e.db}
}

// openPool opens a pgx pool on e's database; the test's cleanup closes it.
func (e *env) openPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(e.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = 64
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// pgxIso maps database/sql's isolation levels to pgx's.
var pgxIso = map[sql.IsolationLevel]pgx.TxIsoLevel{
	sql.LevelDefault: "", sql.LevelReadCommitted: pgx.ReadCommitted,
	sql.LevelRepeatableRead: pgx.RepeatableRead, sql.LevelSerializable: pgx.Serializable,
}

// runTx is sqlcc.RunTx or sqlcc.PgxRunTx with the same options.
func (e *env) runTx(ctx context.Context, o sqlcc.TxOptions, fn func(ctx context.Context, tx api) error) error {
	if e.pgx {
		po := sqlcc.PgxTxOptions{Attempts: o.Attempts, BaseDelay: o.BaseDelay, MaxDelay: o.MaxDelay}
		po.Tx.IsoLevel = pgxIso[o.Isolation]
		if o.ReadOnly {
			po.Tx.AccessMode = pgx.ReadOnly
		}
		return sqlcc.PgxRunTx(ctx, e.pool, po, func(ctx context.Context, tx pgx.Tx) error {
			return fn(ctx, api{pdb: tx, ptx: tx})
		})
	}
	return sqlcc.RunTx(ctx, e.db, o, func(ctx context.Context, tx *sql.Tx) error {
		return fn(ctx, api{db: tx, stx: tx})
	})
}

// begin starts a transaction on e's API; the test's cleanup rolls it back.
func (e *env) begin(t testing.TB, iso sql.IsolationLevel) api {
	t.Helper()
	if e.pgx {
		tx, err := e.pool.BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgxIso[iso]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(context.Background()) })
		return api{pdb: tx, ptx: tx}
	}
	tx, err := e.db.BeginTx(t.Context(), &sql.TxOptions{Isolation: iso})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	return api{db: tx, stx: tx}
}

// Rollback ends a transaction handle.
func (a api) Rollback() error {
	if a.ptx != nil {
		return a.ptx.Rollback(context.Background())
	}
	return a.stx.Rollback()
}

func (a api) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if a.pdb != nil {
		tag, err := a.pdb.Exec(ctx, q, args...)
		return tagResult(tag), err
	}
	return a.db.ExecContext(ctx, q, args...)
}

// tagResult is a pgx command tag as a sql.Result.
type tagResult pgconn.CommandTag

func (r tagResult) RowsAffected() (int64, error) { return pgconn.CommandTag(r).RowsAffected(), nil }
func (r tagResult) LastInsertId() (int64, error) { return 0, fmt.Errorf("no LastInsertId in pgx") }

func (a api) QueryRowContext(ctx context.Context, q string, args ...any) interface{ Scan(...any) error } {
	if a.pdb != nil {
		return a.pdb.QueryRow(ctx, q, args...)
	}
	return a.db.QueryRowContext(ctx, q, args...)
}

func (a api) UpdateVersioned(ctx context.Context, t sqlcc.Table, key any, expect int64, set ...sqlcc.Assignment) (int64, error) {
	if a.pdb != nil {
		return sqlcc.PgxUpdateVersioned(ctx, a.pdb, t, key, expect, set...)
	}
	return sqlcc.UpdateVersioned(ctx, a.db, t, key, expect, set...)
}

func (a api) DeleteVersioned(ctx context.Context, t sqlcc.Table, key any, expect int64) error {
	if a.pdb != nil {
		return sqlcc.PgxDeleteVersioned(ctx, a.pdb, t, key, expect)
	}
	return sqlcc.DeleteVersioned(ctx, a.db, t, key, expect)
}

func (a api) Add(ctx context.Context, t sqlcc.Table, key any, column string, delta, min int64) (int64, error) {
	if a.pdb != nil {
		return sqlcc.PgxAdd(ctx, a.pdb, t, key, column, delta, min)
	}
	return sqlcc.Add(ctx, a.db, t, key, column, delta, min)
}

func (a api) FencedUpdate(ctx context.Context, t sqlcc.Table, key any, token uint64, set ...sqlcc.Assignment) error {
	if a.pdb != nil {
		return sqlcc.PgxFencedUpdate(ctx, a.pdb, t, key, token, set...)
	}
	return sqlcc.FencedUpdate(ctx, a.db, t, key, token, set...)
}

func (a api) CreateOrGet(ctx context.Context, r sqlcc.Row, dest ...any) (bool, error) {
	if a.pdb != nil {
		return sqlcc.PgxCreateOrGet(ctx, a.pdb, r, dest...)
	}
	return sqlcc.CreateOrGet(ctx, a.db, r, dest...)
}

// LockKeys and LockRow need a transaction handle (from runTx or begin).
func (a api) LockKeys(ctx context.Context, t sqlcc.Table, keys []int64, o sqlcc.LockOptions) ([]int64, error) {
	if a.pdb != nil {
		return sqlcc.PgxLockKeys(ctx, a.ptx, t, keys, o)
	}
	return sqlcc.LockKeys(ctx, a.stx, t, keys, o)
}

func (a api) LockRow(ctx context.Context, t sqlcc.Table, key any, o sqlcc.LockOptions, columns []string, dest ...any) error {
	if a.pdb != nil {
		return sqlcc.PgxLockRow(ctx, a.ptx, t, key, o, columns, dest...)
	}
	return sqlcc.LockRow(ctx, a.stx, t, key, o, columns, dest...)
}
