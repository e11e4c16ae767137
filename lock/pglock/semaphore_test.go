package pglock_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/pglock"
)

// semPool returns a pool on a fresh database (the parent's, in a child
// process) with the semaphore tables created.
func semPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testserver.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pglock.CreateSemaphoreTables(t.Context(), pool, ""); err != nil {
		t.Fatal(err)
	}
	return pool
}

func semConfig(pool *pgxpool.Pool) locktest.MultiConfig {
	return locktest.MultiConfig{
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return pglock.NewSemaphore(pool, opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return pglock.NewRWLocker(pool, opts)
		},
	}
}

func TestSemaphoreConformance(t *testing.T) { locktest.RunSemaphore(t, semConfig(semPool(t))) }

func TestRWLockConformance(t *testing.T) { locktest.RunRWLock(t, semConfig(semPool(t))) }
