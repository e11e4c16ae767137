package sqlcc_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTxRequiredAtCompileTime builds a program that calls each function that
// must run inside a transaction with a pool or a bare connection, and checks
// that the compiler rejects every such call, while the same calls with a
// transaction compile. The program is added to the package's directory
// through go build -overlay, so nothing is written to the source tree.
func TestTxRequiredAtCompileTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the compiler")
	}
	const head = `package sqlcc

import (
	"context"
	"database/sql"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	_ *pgxpool.Pool
	_ *pgx.Conn
	_ pgx.Tx
	_ *sql.DB
	_ *sql.Tx
)
`
	bad := []string{
		`func _(ctx context.Context, pool *pgxpool.Pool) { PgxLockKeys(ctx, pool, Table{}, []int{1}, LockOptions{}) }`,
		`func _(ctx context.Context, conn *pgx.Conn) { PgxLockKeys(ctx, conn, Table{}, []int{1}, LockOptions{}) }`,
		`func _(ctx context.Context, pool *pgxpool.Pool) { PgxLockRow(ctx, pool, Table{}, 1, LockOptions{}, nil) }`,
		`func _(ctx context.Context, tx pgx.Tx) { PgxRunTx(ctx, tx, PgxTxOptions{}, nil) }`,
		`func _(ctx context.Context, db *sql.DB) { LockKeys(ctx, db, Table{}, []int{1}, LockOptions{}) }`,
		`func _(ctx context.Context, db *sql.DB) { LockRow(ctx, db, Table{}, 1, LockOptions{}, nil) }`,
	}
	good := `func _(ctx context.Context, pool *pgxpool.Pool, conn *pgx.Conn, tx pgx.Tx, db *sql.DB, stx *sql.Tx) {
	PgxLockKeys(ctx, tx, Table{}, []int{1}, LockOptions{})
	PgxLockRow(ctx, tx, Table{}, 1, LockOptions{}, nil)
	PgxRunTx(ctx, pool, PgxTxOptions{}, nil)
	PgxRunTx(ctx, conn, PgxTxOptions{}, nil)
	PgxUpdateVersioned(ctx, pool, Table{}, 1, 0)
	PgxUpdateVersioned(ctx, conn, Table{}, 1, 0)
	PgxUpdateVersioned(ctx, tx, Table{}, 1, 0)
	LockKeys(ctx, stx, Table{}, []int{1}, LockOptions{})
	LockRow(ctx, stx, Table{}, 1, LockOptions{}, nil)
	RunTx(ctx, db, TxOptions{}, nil)
}
`
	dir, err := os.Getwd() // go test runs the binary in the package's directory
	if err != nil {
		t.Fatal(err)
	}
	build := func(t *testing.T, src string) string {
		t.Helper()
		tmp := t.TempDir()
		file := filepath.Join(tmp, "zz_compile_check.go")
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		overlay, err := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(dir, "zz_compile_check.go"): file}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "overlay.json"), overlay, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(t.Context(), "go", "build", "-gcflags=-e", "-overlay", filepath.Join(tmp, "overlay.json"), ".")
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := build(t, head+good); out != "" {
		t.Fatalf("calls with a transaction do not compile:\n%s", out)
	}
	out := build(t, head+strings.Join(bad, "\n")+"\n")
	lines := strings.Count(head, "\n")
	for i, call := range bad {
		if !strings.Contains(out, fmt.Sprintf("zz_compile_check.go:%d:", lines+i+1)) {
			t.Errorf("compiles, but must not: %s", call)
		}
	}
	t.Logf("compiler output:\n%s", out)
}
