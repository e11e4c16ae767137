package singleton_test

import (
	"database/sql"
	"testing"

	_ "github.com/go-sql-driver/mysql"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/mysqllock"
	"github.com/haita/haita/singleton"
)

// TestProcessesMySQL is TestProcessesPostgres on MariaDB: the lease from
// mysqllock, the slot markers in the same database.
func TestProcessesMySQL(t *testing.T) {
	dsn := testserver.MariaDB(t)
	testProcesses(t, func(t *testing.T, dir string) (lock.Locker, *singleton.SQLMarkers) {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := mysqllock.CreateTable(t.Context(), db, mysqllock.DefaultTable); err != nil {
			t.Fatal(err)
		}
		l, err := mysqllock.New(db, lock.Options{TTL: leaseTTL, Holder: holderName()})
		if err != nil {
			t.Fatal(err)
		}
		mk, _ := newMarkers(t, "mysql", dsn)
		return l, mk
	})
}
