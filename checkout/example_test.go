package checkout_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/httpcc"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/sqlcc"
)

// openSQLite opens a fresh SQLite database for an example.
func openSQLite() (*sql.DB, func()) {
	dir, err := os.MkdirTemp("", "checkout-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	return db, func() { db.Close(); os.RemoveAll(dir) }
}

// Alice checks a document out; Bob is told who holds it and until when;
// Alice saves through her checkout and releases it.
func Example() {
	ctx := context.Background()
	db, done := openSQLite()
	defer done()
	store, err := checkout.NewSQLStore(db, checkout.SQLOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT)"); err != nil {
		log.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	m, err := checkout.New(store, checkout.Options{Idle: 15 * time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		log.Fatal(err)
	}

	alice, err := m.Acquire(ctx, "doc/1", "alice")
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.Acquire(ctx, "doc/1", "bob")
	var held *checkout.HeldError
	if errors.As(err, &held) {
		fmt.Printf("bob: held by %s until %s\n", held.Holder, held.Until.Format(time.Kitchen))
	}

	err = m.Save(ctx, "doc/1", alice.Token, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO docs (id, body) VALUES (1, 'hello')")
		return err
	})
	fmt.Println("alice saved:", err == nil)
	if err := m.Release(ctx, "doc/1", alice.Token); err != nil {
		log.Fatal(err)
	}
	_, ok, _ := m.Get(ctx, "doc/1")
	fmt.Println("still checked out:", ok)
	// Output:
	// bob: held by alice until 9:15AM
	// alice saved: true
	// still checked out: false
}

// An administrator breaks a checkout; the former holder learns who, when
// and why on his next heartbeat, and his save is refused.
func ExampleManager_Break() {
	ctx := context.Background()
	db, done := openSQLite()
	defer done()
	store, _ := checkout.NewSQLStore(db, checkout.SQLOptions{Dialect: sqlcc.SQLite})
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	m, _ := checkout.New(store, checkout.Options{Now: func() time.Time { return now }})

	bob, _ := m.Acquire(ctx, "invoice/7", "bob")
	now = now.Add(5 * time.Minute)
	if _, err := m.Break(ctx, "invoice/7", "admin", "bob left for the day"); err != nil {
		log.Fatal(err)
	}
	_, err := m.Heartbeat(ctx, "invoice/7", bob.Token)
	var be *checkout.BrokenError
	if errors.As(err, &be) {
		fmt.Printf("broken by %s at %s: %s\n", be.By, be.At.Format(time.Kitchen), be.Reason)
	}
	err = m.Save(ctx, "invoice/7", bob.Token, func(context.Context, *sql.Tx) error { return nil })
	fmt.Println("save refused:", errors.Is(err, checkout.ErrBroken))
	// Output:
	// broken by admin at 9:05AM: bob left for the day
	// save refused: true
}

// A checkout held by someone else becomes 423 Locked over HTTP.
func ExampleHeldError_http() {
	ctx := context.Background()
	db, done := openSQLite()
	defer done()
	store, _ := checkout.NewSQLStore(db, checkout.SQLOptions{})
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	m, _ := checkout.New(store, checkout.Options{Idle: 30 * time.Minute, Now: func() time.Time { return now }})
	if _, err := m.Acquire(ctx, "memo", "alice"); err != nil {
		log.Fatal(err)
	}

	rec := httptest.NewRecorder()
	if _, err := m.Acquire(ctx, "memo", "bob"); err != nil {
		var he *checkout.HeldError
		if errors.As(err, &he) {
			err = &httpcc.LockedError{Holder: he.Holder, Since: he.Since, Until: he.Until}
		}
		httpcc.WriteError(rec, err)
	}
	fmt.Println(rec.Code, rec.Header().Get("Retry-After"))
	// Output:
	// 423 Sun, 01 Mar 2026 09:30:00 GMT
}

// The migration SQL for PostgreSQL.
func ExampleSchema() {
	stmts, err := checkout.Schema(sqlcc.Postgres, "")
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range stmts {
		fmt.Println(s + ";")
	}
	// Output:
	// CREATE TABLE IF NOT EXISTS "haita_checkouts" (
	// 	resource VARCHAR(512) NOT NULL PRIMARY KEY,
	// 	owner    VARCHAR(256) NOT NULL,
	// 	token    VARCHAR(64)  NOT NULL,
	// 	since_ns BIGINT       NOT NULL,
	// 	beat_ns  BIGINT       NOT NULL,
	// 	until_ns BIGINT       NOT NULL
	// );
	// CREATE INDEX "haita_checkouts_owner" ON "haita_checkouts" (owner);
	// CREATE INDEX "haita_checkouts_until" ON "haita_checkouts" (until_ns);
	// CREATE TABLE IF NOT EXISTS "haita_checkouts_ended" (
	// 	token     VARCHAR(64)  NOT NULL PRIMARY KEY,
	// 	resource  VARCHAR(512) NOT NULL,
	// 	owner     VARCHAR(256) NOT NULL,
	// 	since_ns  BIGINT       NOT NULL,
	// 	ended_ns  BIGINT       NOT NULL,
	// 	state     VARCHAR(16)  NOT NULL,
	// 	broken_by VARCHAR(256) NOT NULL,
	// 	reason    TEXT NOT NULL
	// );
	// CREATE INDEX "haita_checkouts_ended_at" ON "haita_checkouts_ended" (ended_ns);
}

// Checkouts over a lock backend: here in-process memlock. Save is not
// available; guard writes with the Fence token instead.
func ExampleNewLockStore() {
	ctx := context.Background()
	l, err := memlock.New(lock.Options{Holder: "web-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	store, err := checkout.NewLockStore(l, checkout.LockStoreOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	m, _ := checkout.New(store, checkout.Options{})

	c, err := m.Acquire(ctx, "page/home", "alice")
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.Acquire(ctx, "page/home", "bob")
	var he *checkout.HeldError
	if errors.As(err, &he) {
		fmt.Println("bob: held by", he.Holder)
	}
	fmt.Println("fence > 0:", c.Fence > 0)
	fmt.Println("save:", m.Save(ctx, "page/home", c.Token, nil))
	// Output:
	// bob: held by alice
	// fence > 0: true
	// save: checkout: store has no transactions; Save needs the SQL store
}
