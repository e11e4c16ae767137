package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/pglock"
)

// Create the table once (or ship pglock.Schema in your migrations), then
// lock keys with a pool.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pglock.CreateTable(ctx, pool, pglock.DefaultTable); err != nil {
		log.Fatal(err)
	}
	locker, err := pglock.New(pool, lock.Options{TTL: 15 * time.Second, Holder: "worker-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	le, err := locker.TryAcquire(ctx, "invoice/42")
	var held *lock.HeldError
	switch {
	case errors.As(err, &held):
		fmt.Printf("busy: %s holds it until %s\n", held.Holder, held.ExpiresAt.Format(time.Kitchen))
		return
	case err != nil:
		log.Fatal(err)
	}
	defer le.Release(context.WithoutCancel(ctx))
	fmt.Println("holding invoice/42 with token", le.Token())
}

// The migration SQL for a schema-qualified table.
func ExampleSchema() {
	ddl, err := pglock.Schema("app.locks")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(ddl)
	// Output:
	// CREATE SEQUENCE IF NOT EXISTS "app"."locks_token";
	// CREATE TABLE IF NOT EXISTS "app"."locks" (
	// 	key        text        PRIMARY KEY,
	// 	owner      text        NOT NULL,
	// 	holder     text        NOT NULL,
	// 	token      bigint      NOT NULL,
	// 	expires_at timestamptz NOT NULL
	// );
	// CREATE UNLOGGED TABLE IF NOT EXISTS "app"."locks_wait" (
	// 	key        text        NOT NULL,
	// 	seq        bigint      NOT NULL,
	// 	owner      text        NOT NULL,
	// 	holder     text        NOT NULL,
	// 	channel    text        NOT NULL,
	// 	ttl        bigint      NOT NULL,
	// 	expires_at timestamptz NOT NULL,
	// 	PRIMARY KEY (key, seq)
	// );
}
