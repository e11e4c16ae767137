package mysqllock_test

import (
	"database/sql"
	"testing"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/mysqllock"
)

func semConfig(t *testing.T) locktest.MultiConfig {
	db := openDB(t, "")
	if err := mysqllock.CreateSemaphoreTables(t.Context(), db, ""); err != nil {
		t.Fatal(err)
	}
	return semConfigDB(db)
}

func semConfigDB(db *sql.DB) locktest.MultiConfig {
	return locktest.MultiConfig{
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return mysqllock.NewSemaphore(db, opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return mysqllock.NewRWLocker(db, opts)
		},
	}
}

func TestSemaphoreConformance(t *testing.T) { locktest.RunSemaphore(t, semConfig(t)) }

func TestRWLockConformance(t *testing.T) { locktest.RunRWLock(t, semConfig(t)) }
