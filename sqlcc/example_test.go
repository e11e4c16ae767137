package sqlcc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/haita/haita/sqlcc"
)

// exampleDB opens a SQLite database in a temporary directory with the
// given schema. Production code would use PostgreSQL or MySQL the same way.
func exampleDB(schema ...string) (*sql.DB, func()) {
	dir, err := os.MkdirTemp("", "sqlcc-example")
	if err != nil {
		panic(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "x.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		panic(err)
	}
	for _, s := range schema {
		if _, err := db.Exec(s); err != nil {
			panic(err)
		}
	}
	return db, func() { db.Close(); os.RemoveAll(dir) }
}

// Optimistic locking: read the row with its version, write only if nobody
// changed it since, and on a conflict read again and re-apply.
func ExampleUpdateVersioned() {
	db, done := exampleDB(
		"CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, version INTEGER NOT NULL)",
		"INSERT INTO counters VALUES (1, 17, 0)",
	)
	defer done()
	ctx := context.Background()
	counters := sqlcc.Table{Name: "counters"} // dialect detected from db

	// Someone else saved version 0 first: our write of version 0 conflicts.
	if _, err := sqlcc.UpdateVersioned(ctx, db, counters, 1, 0, sqlcc.Set("n", 18)); err != nil {
		panic(err)
	}
	_, err := sqlcc.UpdateVersioned(ctx, db, counters, 1, 0, sqlcc.Set("n", 18))
	var ce *sqlcc.ConflictError
	if errors.As(err, &ce) {
		fmt.Println("conflict, current version", ce.Current)
	}

	// With Retry the increment re-reads and re-applies until it wins.
	err = sqlcc.Retry(ctx, sqlcc.RetryOptions{}, func(ctx context.Context) error {
		var n, v int64
		if err := db.QueryRowContext(ctx, "SELECT n, version FROM counters WHERE id = 1").Scan(&n, &v); err != nil {
			return err
		}
		_, err := sqlcc.UpdateVersioned(ctx, db, counters, 1, v, sqlcc.Set("n", n+1))
		return err
	})
	var n int64
	db.QueryRow("SELECT n FROM counters WHERE id = 1").Scan(&n)
	fmt.Println(n, err)
	// Output:
	// conflict, current version 1
	// 19 <nil>
}

// Idempotent create: the second creator gets the first one's row.
func ExampleCreateOrGet() {
	db, done := exampleDB("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
	defer done()
	ctx := context.Background()
	row := sqlcc.Row{
		Table:  sqlcc.Table{Name: "products"},
		Unique: []string{"name"},
		Values: []sqlcc.Assignment{sqlcc.Set("name", "bar")},
	}
	for range 2 {
		var id int64
		created, err := sqlcc.CreateOrGet(ctx, db, row, &id)
		fmt.Println(id, created, err)
	}
	// Output:
	// 1 true <nil>
	// 1 false <nil>
}

// The parent-row-lock recipe (Rails' item.lock! in a transaction): lock the
// row that owns the records about to be created, then check and insert.
// A second creator waits at the lock until the first commits, then sees its
// record instead of failing with "Duplicate entry".
func Example_parentRowLock() {
	db, done := exampleDB(
		"CREATE TABLE items (id INTEGER PRIMARY KEY, status INTEGER NOT NULL DEFAULT 0)",
		"CREATE TABLE products (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL, foo TEXT NOT NULL UNIQUE)",
		"INSERT INTO items (id) VALUES (7)",
	)
	defer done()
	items := sqlcc.Table{Dialect: sqlcc.SQLite, Name: "items"} // a *sql.Tx needs the dialect set

	create := func(ctx context.Context) (created bool, err error) {
		err = sqlcc.RunTx(ctx, db, sqlcc.TxOptions{}, func(ctx context.Context, tx *sql.Tx) error {
			created = false
			if err := sqlcc.LockRow(ctx, tx, items, 7, sqlcc.LockOptions{}, nil); err != nil {
				return err // B waits here while A holds the lock
			}
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM products WHERE foo = 'bar'").Scan(&n); err != nil || n > 0 {
				return err // not creatable: A created it
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO products (item_id, foo) VALUES (7, 'bar')"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "UPDATE items SET status = 2 WHERE id = 7")
			created = err == nil
			return err
		})
		return created, err
	}
	fmt.Println(create(context.Background()))
	fmt.Println(create(context.Background()))
	// Output:
	// true <nil>
	// false <nil>
}

// Classify tells the engine-independent class of a driver error and what to
// retry.
func ExampleClassify() {
	db, done := exampleDB("CREATE TABLE users (login TEXT PRIMARY KEY)", "INSERT INTO users VALUES ('ann')")
	defer done()
	_, err := db.Exec("INSERT INTO users VALUES ('ann')")
	err = fmt.Errorf("register: %w", err)
	c := sqlcc.Classify(err)
	fmt.Println(sqlcc.IsUniqueViolation(err), c.Class, c.Dialect, c.Code, c.Retry)
	// Output:
	// true unique_violation sqlite 1555 none
}

// A fenced write from a lock holder that lost its lease to a newer holder
// is refused.
func ExampleFencedUpdate() {
	db, done := exampleDB(
		"CREATE TABLE reports (id INTEGER PRIMARY KEY, body TEXT, fence INTEGER)",
		"INSERT INTO reports (id) VALUES (1)",
	)
	defer done()
	ctx := context.Background()
	reports := sqlcc.Table{Name: "reports"}
	fmt.Println(sqlcc.FencedUpdate(ctx, db, reports, 1, 34, sqlcc.Set("body", "new holder")))
	err := sqlcc.FencedUpdate(ctx, db, reports, 1, 33, sqlcc.Set("body", "paused old holder"))
	fmt.Println(errors.Is(err, sqlcc.ErrStaleToken), err)
	// Output:
	// <nil>
	// true sqlcc: stale fencing token on reports 1: token 33, stored 34
}

// Lock two accounts in canonical order inside a transaction that is retried
// on deadlock or serialization failure.
func ExampleLockKeys() {
	db, done := exampleDB(
		"CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
		"INSERT INTO accounts VALUES (1, 100), (2, 0)",
	)
	defer done()
	accounts := sqlcc.Table{Dialect: sqlcc.SQLite, Name: "accounts"}
	err := sqlcc.RunTx(context.Background(), db, sqlcc.TxOptions{}, func(ctx context.Context, tx *sql.Tx) error {
		locked, err := sqlcc.LockKeys(ctx, tx, accounts, []int64{2, 1}, sqlcc.LockOptions{})
		if err != nil {
			return err
		}
		fmt.Println("locked", locked)
		if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - 30 WHERE id = 1"); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + 30 WHERE id = 2")
		return err
	})
	fmt.Println(err)
	// Output:
	// locked [1 2]
	// <nil>
}

// One query text for every engine: Rebind turns ? into PostgreSQL's $n.
func ExampleDialect_Rebind() {
	const q = "UPDATE docs SET body = ?, version = version + 1 WHERE id = ? AND version = ?"
	fmt.Println(sqlcc.Postgres.Rebind(q))
	fmt.Println(sqlcc.MySQL.Rebind(q))
	// Output:
	// UPDATE docs SET body = $1, version = version + 1 WHERE id = $2 AND version = $3
	// UPDATE docs SET body = ?, version = version + 1 WHERE id = ? AND version = ?
}
