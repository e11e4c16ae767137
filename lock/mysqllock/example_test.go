package mysqllock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/mysqllock"
)

// Create the table once (or ship mysqllock.Schema in your migrations), then
// lock keys with a *sql.DB.
func Example() {
	ctx := context.Background()
	db, err := sql.Open("mysql", "app@tcp(127.0.0.1:3306)/app")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := mysqllock.CreateTable(ctx, db, mysqllock.DefaultTable); err != nil {
		log.Fatal(err)
	}
	locker, err := mysqllock.New(db, lock.Options{TTL: 15 * time.Second, Holder: "worker-1"})
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

// A table of its own, in another database of the same server.
func ExampleWithTable() {
	db, err := sql.Open("mysql", "app@tcp(127.0.0.1:3306)/app")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	locker, err := mysqllock.New(db, lock.Options{AutoRefresh: true}, mysqllock.WithTable("ops.job_locks"))
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()
}

// The migration SQL.
func ExampleSchema() {
	ddl, err := mysqllock.Schema("app.locks")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ddl)
	// Output:
	// CREATE TABLE IF NOT EXISTS `app`.`locks` (
	// 	lock_key   VARBINARY(512) NOT NULL PRIMARY KEY,
	// 	owner      CHAR(32) CHARACTER SET ascii NOT NULL,
	// 	holder     VARCHAR(256) CHARACTER SET utf8mb4 NOT NULL,
	// 	token      BIGINT NOT NULL,
	// 	expires_at DATETIME(6) NOT NULL
	// ) ENGINE=InnoDB
}
