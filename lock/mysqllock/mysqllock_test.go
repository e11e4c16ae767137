package mysqllock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/haita/haita/internal/leaserowtest"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/mysqllock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// openDB returns a pool on a fresh MariaDB database (the parent's, in a
// child process) with the lease table created.
func openDB(t testing.TB, table string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", testserver.MariaDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxIdleConns(16)
	if err := mysqllock.CreateTable(t.Context(), db, table); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) {
	db := openDB(t, "")
	locktest.Run(t, locktest.Config{
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return mysqllock.New(db, opts)
		},
	})
}

func TestTableNames(t *testing.T) {
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:1)/x")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tests := []struct {
		table string
		ok    bool
	}{
		{"locks", true},
		{"app.locks", true},
		{"_Locks2", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{"a.b.c", false},
		{"locks; drop table x", false},
		{"lo`cks", false},
		{"1locks", false},
		{"app.", false},
		{strings.Repeat("x", 65), false},
		{"läcks", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.table), func(t *testing.T) {
			l, err := mysqllock.New(db, lock.Options{}, mysqllock.WithTable(tt.table))
			if tt.ok != (err == nil) {
				t.Fatalf("New with table %q = %v, want ok=%v", tt.table, err, tt.ok)
			}
			if err != nil && !errors.Is(err, lock.ErrInvalidOptions) {
				t.Errorf("error %v does not match ErrInvalidOptions", err)
			}
			if err == nil {
				_ = l.Close()
			}
			if tt.table == "" {
				return // Schema("") selects the default
			}
			ddl, err := mysqllock.Schema(tt.table)
			if tt.ok != (err == nil) {
				t.Errorf("Schema(%q) = %v, want ok=%v", tt.table, err, tt.ok)
			}
			if err == nil && !strings.Contains(ddl, "CREATE TABLE IF NOT EXISTS") {
				t.Errorf("Schema(%q) = %q", tt.table, ddl)
			}
		})
	}
}

func TestConstructorErrors(t *testing.T) {
	if _, err := mysqllock.New(nil, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New(nil) = %v", err)
	}
	pg, err := sql.Open("pgx", "postgres://127.0.0.1:1/x")
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if _, err := mysqllock.New(pg, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New with a PostgreSQL db = %v", err)
	}
	my, err := sql.Open("mysql", "root@tcp(127.0.0.1:1)/x")
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	if _, err := mysqllock.New(my, lock.Options{TTL: -1}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New with negative TTL = %v", err)
	}
}

func TestCreateTableIsIdempotentAndConcurrent(t *testing.T) {
	db := openDB(t, "")
	leaserowtest.CreateTableConcurrent(t, func(ctx context.Context) error {
		return mysqllock.CreateTable(ctx, db, "other_locks")
	}, func(opts lock.Options) (lock.Locker, error) {
		return mysqllock.New(db, opts, mysqllock.WithTable("other_locks"))
	})
}

// TestHeldErrorReportsHolder checks that a failed TryAcquire names the
// holder and its expiry, measured by the database clock.
func TestHeldErrorReportsHolder(t *testing.T) {
	db := openDB(t, "")
	leaserowtest.HeldErrorReportsHolder(t, func(opts lock.Options) (lock.Locker, error) {
		return mysqllock.New(db, opts)
	})
}

// TestTokensSurviveDeletedRows deletes a free row, as a clean-up job may,
// and checks that the key's next token is still greater: a token never
// repeats because a row went away.
func TestTokensSurviveDeletedRows(t *testing.T) {
	db := openDB(t, "")
	l, err := mysqllock.New(db, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var last lock.Token
	for i := range 5 {
		le, err := l.TryAcquire(t.Context(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if le.Token() <= last {
			t.Fatalf("round %d: token %d after %d", i, le.Token(), last)
		}
		last = le.Token()
		if err := le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if _, err := db.ExecContext(t.Context(), "DELETE FROM haita_locks WHERE lock_key = 'k' AND expires_at < UTC_TIMESTAMP(6)"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestConcurrentFirstAcquire starts many acquires of one new key at once,
// many times: concurrent inserts of one key can deadlock in InnoDB, and
// exactly one must get the key while the others are told it is held.
func TestConcurrentFirstAcquire(t *testing.T) {
	db := openDB(t, "")
	l, err := mysqllock.New(db, lock.Options{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for round := range 20 {
		key := fmt.Sprintf("new/%d", round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var got []*lock.Lease
		start := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				<-start
				le, err := l.TryAcquire(t.Context(), key)
				if err != nil {
					if !errors.Is(err, lock.ErrNotAcquired) {
						t.Errorf("round %d: %v", round, err)
					}
					return
				}
				mu.Lock()
				got = append(got, le)
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		if len(got) != 1 {
			t.Fatalf("round %d: %d holders of a new key, want 1", round, len(got))
		}
		if err := got[0].Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReleaseAfterClose: leases granted before Close still refresh and
// release.
func TestReleaseAfterClose(t *testing.T) {
	db := openDB(t, "")
	l, err := mysqllock.New(db, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	le, err := l.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := le.Refresh(t.Context()); err != nil {
		t.Errorf("Refresh after Close: %v", err)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Errorf("Release after Close: %v", err)
	}
	l2, err := mysqllock.New(db, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	le2, err := l2.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatalf("key still held after Release: %v", err)
	}
	_ = le2.Release(t.Context())
}

// TestReleaseHandsKeyToOwnWaiter: with a poll interval of a minute, a
// release hands the key to the waiter of the same Locker in one statement:
// the waiter gets it with a greater token, and the row's history (a
// system-versioned table) shows that it never became free in between.
func TestReleaseHandsKeyToOwnWaiter(t *testing.T) {
	db := openDB(t, "handoff_locks")
	// A system-versioned table keeps every version of the row. (A trigger
	// would do as a probe only if it ran no statement: any statement in a
	// trigger changes the insert id the statements report the token in.)
	if _, err := db.ExecContext(t.Context(), "ALTER TABLE handoff_locks ADD SYSTEM VERSIONING"); err != nil {
		t.Fatal(err)
	}
	l, err := mysqllock.New(db, lock.Options{PollInterval: time.Minute, TTL: time.Minute}, mysqllock.WithTable("handoff_locks"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.Acquire(t.Context(), "hot")
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		got := make(chan *lock.Lease, 1)
		go func() {
			le2, err := l.Acquire(t.Context(), "hot")
			if err != nil {
				t.Errorf("round %d: waiter: %v", round, err)
			}
			got <- le2
		}()
		locktest.WaitUntilWaiting(t, l, "hot", 1)
		if err := le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		var next *lock.Lease
		select {
		case next = <-got:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: waiter not given the key by the release of its own Locker", round)
		}
		if next == nil {
			t.FailNow()
		}
		if next.Token() <= le.Token() {
			t.Errorf("round %d: waiter's token %d not greater than the releaser's %d", round, next.Token(), le.Token())
		}
		le = next
	}
	var versions, free int
	err = db.QueryRowContext(t.Context(), "SELECT COUNT(*), COALESCE(SUM(owner = ''), 0) FROM handoff_locks FOR SYSTEM_TIME ALL WHERE lock_key = 'hot'").
		Scan(&versions, &free)
	if err != nil {
		t.Fatal(err)
	}
	if versions < 4 || free != 0 {
		t.Errorf("the row had %d versions, %d of them free; want at least 4 (one per holder), none free", versions, free)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}
