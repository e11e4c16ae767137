package sqlcc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/sqlcc"
)

// TestPgxHandles runs the Pgx functions on a bare *pgx.Conn (the scenario
// tests use a pool and pgx.Tx), and checks what they refuse: another
// dialect, a nil transaction, invalid options, and a COMMIT of a
// transaction that an error already aborted.
func TestPgxHandles(t *testing.T) {
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, testserver.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, version bigint NOT NULL DEFAULT 0)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO docs (id, body) VALUES (1, 'a'), (2, 'b')"); err != nil {
		t.Fatal(err)
	}
	docs := sqlcc.Table{Name: "docs"}

	if v, err := sqlcc.PgxUpdateVersioned(ctx, conn, docs, 1, 0, sqlcc.Set("body", "c")); err != nil || v != 1 {
		t.Fatalf("PgxUpdateVersioned on *pgx.Conn = %d, %v", v, err)
	}
	err = sqlcc.PgxRunTx(ctx, conn, sqlcc.PgxTxOptions{Tx: pgx.TxOptions{IsoLevel: pgx.Serializable}}, func(ctx context.Context, tx pgx.Tx) error {
		var iso, body string
		if err := tx.QueryRow(ctx, "SHOW transaction_isolation").Scan(&iso); err != nil {
			return err
		}
		if iso != "serializable" {
			t.Errorf("isolation %q, want serializable", iso)
		}
		got, err := sqlcc.PgxLockKeys(ctx, tx, docs, []int64{2, 1, 2}, sqlcc.LockOptions{Mode: sqlcc.NoWait})
		if err != nil || len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Errorf("PgxLockKeys = %v, %v; want [1 2]", got, err)
		}
		if err := sqlcc.PgxLockRow(ctx, tx, docs, 1, sqlcc.LockOptions{}, []string{"body"}, &body); err != nil || body != "c" {
			t.Errorf("PgxLockRow = %q, %v", body, err)
		}
		_, err = sqlcc.PgxUpdateVersioned(ctx, tx, docs, 2, 0, sqlcc.Set("body", "d"))
		return err
	})
	if err != nil {
		t.Fatalf("PgxRunTx on *pgx.Conn: %v", err)
	}

	mysql := sqlcc.Table{Dialect: sqlcc.MySQL, Name: "docs"}
	for name, err := range map[string]error{
		"PgxUpdateVersioned": func() error { _, err := sqlcc.PgxUpdateVersioned(ctx, conn, mysql, 1, 1); return err }(),
		"PgxDeleteVersioned": sqlcc.PgxDeleteVersioned(ctx, conn, mysql, 1, 1),
		"PgxAdd":             func() error { _, err := sqlcc.PgxAdd(ctx, conn, mysql, 1, "version", 1, 0); return err }(),
		"PgxFencedUpdate":    sqlcc.PgxFencedUpdate(ctx, conn, mysql, 1, 1),
		"PgxCreateOrGet": func() error {
			var id int64
			_, err := sqlcc.PgxCreateOrGet(ctx, conn, sqlcc.Row{Table: mysql, Unique: []string{"id"}, Values: []sqlcc.Assignment{sqlcc.Set("id", 1)}}, &id)
			return err
		}(),
		"PgxRunTx attempts": sqlcc.PgxRunTx(ctx, conn, sqlcc.PgxTxOptions{Attempts: -1}, nil),
		"PgxRunTx delays":   sqlcc.PgxRunTx(ctx, conn, sqlcc.PgxTxOptions{BaseDelay: -1}, nil),
	} {
		if !errors.Is(err, sqlcc.ErrInvalidOptions) {
			t.Errorf("%s = %v, want ErrInvalidOptions", name, err)
		}
	}
	if _, err := sqlcc.PgxLockKeys(ctx, nil, docs, []int64{1}, sqlcc.LockOptions{}); !errors.Is(err, sqlcc.ErrNotInTx) {
		t.Errorf("PgxLockKeys(nil tx) = %v, want ErrNotInTx", err)
	}
	if err := sqlcc.PgxLockRow(ctx, nil, docs, 1, sqlcc.LockOptions{}, nil); !errors.Is(err, sqlcc.ErrNotInTx) {
		t.Errorf("PgxLockRow(nil tx) = %v, want ErrNotInTx", err)
	}
	var v int64
	if err := conn.QueryRow(ctx, "SELECT version FROM docs WHERE id = 1").Scan(&v); err != nil || v != 1 {
		t.Errorf("version after the refused calls = %d, %v; want 1 (unchanged)", v, err)
	}

	// fn swallows an error that aborted the transaction: COMMIT answers
	// ROLLBACK, a definite failure, not an unknown outcome, and not retried.
	calls := 0
	err = sqlcc.PgxRunTx(ctx, conn, sqlcc.PgxTxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
		calls++
		_, _ = tx.Exec(ctx, "INSERT INTO docs (id, body) VALUES (1, 'dup')")
		return nil
	})
	if !errors.Is(err, pgx.ErrTxCommitRollback) || errors.Is(err, sqlcc.ErrCommitUnknown) || calls != 1 {
		t.Errorf("commit of an aborted transaction = %v after %d calls; want ErrTxCommitRollback, 1 call", err, calls)
	}
}
