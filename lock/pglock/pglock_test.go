package pglock_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/pglock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// openPool returns a pool on a fresh database (the parent's, in a child
// process) with the lease table created.
func openPool(t testing.TB, table string) *pgxpool.Pool {
	t.Helper()
	dsn := testserver.Postgres(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pglock.CreateTable(t.Context(), pool, table); err != nil {
		t.Fatal(err)
	}
	return pool
}

func TestConformance(t *testing.T) {
	pool := openPool(t, "")
	locktest.Run(t, locktest.Config{
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return pglock.New(pool, pglock.Options{Options: opts})
		},
	})
}

func TestConformanceDatabaseSQL(t *testing.T) {
	dsn := testserver.Postgres(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := pglock.CreateTableDB(t.Context(), db, "app_locks"); err != nil {
		t.Fatal(err)
	}
	locktest.Run(t, locktest.Config{
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return pglock.NewDB(db, pglock.Options{Options: opts, Table: "app_locks"})
		},
	})
}

func TestTableNames(t *testing.T) {
	tests := []struct {
		table string
		ok    bool
	}{
		{"", true},
		{"locks", true},
		{"app.locks", true},
		{"_Locks2", true},
		{"a.b.c", false},
		{"locks; drop table x", false},
		{`lo"cks`, false},
		{"1locks", false},
		{"app.", false},
		{strings.Repeat("x", 58), false},
		{"läcks", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.table), func(t *testing.T) {
			ddl, err := pglock.Schema(tt.table)
			if tt.ok != (err == nil) {
				t.Fatalf("Schema(%q) = %v, want ok=%v", tt.table, err, tt.ok)
			}
			if err != nil && !errors.Is(err, lock.ErrInvalidOptions) {
				t.Errorf("error %v does not match ErrInvalidOptions", err)
			}
			if err == nil && !strings.Contains(ddl, "CREATE TABLE IF NOT EXISTS") {
				t.Errorf("Schema(%q) = %q", tt.table, ddl)
			}
			l, err := pglock.New(&pgxpool.Pool{}, pglock.Options{Table: tt.table})
			if tt.ok != (err == nil) {
				t.Errorf("New with table %q = %v, want ok=%v", tt.table, err, tt.ok)
			}
			if err == nil {
				_ = l.Close()
			}
		})
	}
}

func TestConstructorErrors(t *testing.T) {
	if _, err := pglock.New(nil, pglock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New(nil) = %v", err)
	}
	if _, err := pglock.NewDB(nil, pglock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("NewDB(nil) = %v", err)
	}
	if _, err := pglock.New(&pgxpool.Pool{}, pglock.Options{Options: lock.Options{TTL: -1}}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New with negative TTL = %v", err)
	}
}

func TestCreateTableIsIdempotentAndConcurrent(t *testing.T) {
	pool := openPool(t, "")
	if _, err := pool.Exec(t.Context(), "CREATE SCHEMA other"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- pglock.CreateTable(t.Context(), pool, "other.locks") }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("CreateTable: %v", err)
		}
	}
	for range 3 {
		if err := pglock.CreateTable(t.Context(), pool, "other.locks"); err != nil {
			t.Fatal(err)
		}
	}
	l, err := pglock.New(pool, pglock.Options{Table: "other.locks"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestHeldErrorReportsHolder checks that a failed TryAcquire names the
// holder and its expiry, measured by the database clock.
func TestHeldErrorReportsHolder(t *testing.T) {
	pool := openPool(t, "")
	a, err := pglock.New(pool, pglock.Options{Options: lock.Options{TTL: time.Minute, Holder: "api-1/pid 7"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := pglock.New(pool, pglock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	le, err := a.TryAcquire(t.Context(), "held")
	if err != nil {
		t.Fatal(err)
	}
	defer le.Release(context.WithoutCancel(t.Context()))
	_, err = b.TryAcquire(t.Context(), "held")
	var he *lock.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("TryAcquire = %v, want *HeldError", err)
	}
	if he.Holder != "api-1/pid 7" {
		t.Errorf("Holder = %q", he.Holder)
	}
	if d := time.Until(he.ExpiresAt); d < 55*time.Second || d > 61*time.Second {
		t.Errorf("ExpiresAt in %v, want about a minute", d)
	}
}

// TestListenerReconnects kills the Locker's listening connection on the
// server and checks that a waiter is still woken by a release long before
// its poll interval.
func TestListenerReconnects(t *testing.T) {
	pool := openPool(t, "")
	opts := pglock.Options{Options: lock.Options{PollInterval: time.Minute}}
	holder, err := pglock.New(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	waiter, err := pglock.New(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	for round := range 3 {
		le, err := holder.Acquire(t.Context(), "k")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			le2, err := waiter.Acquire(t.Context(), "k")
			if err == nil {
				err = le2.Release(t.Context())
			}
			got <- err
		}()
		// Wait until the waiter listens, then cut that connection.
		var killed int
		for deadline := time.Now().Add(10 * time.Second); killed == 0 && time.Now().Before(deadline); {
			err := pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`).Scan(&killed)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if killed == 0 {
			t.Fatal("no listening connection found")
		}
		// The waiter's listener reconnects (it wakes its waiters when it
		// does); give it time, then release.
		time.Sleep(500 * time.Millisecond)
		if err := le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("round %d: waiter: %v", round, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: waiter not woken after its listening connection was killed", round)
		}
	}
}

const (
	envChild = "PGLOCK_TEST_CHILD_DSN"
	childKey = "killed-holder"
)

// TestKilledHolder starts a child process that takes a key with
// auto-refresh and is killed with SIGKILL: the key frees itself at the
// lease's expiry and the next holder's token is greater.
func TestKilledHolder(t *testing.T) {
	if dsn := os.Getenv(envChild); dsn != "" {
		killedHolderChild(t, dsn)
		return
	}
	pool := openPool(t, "")
	const ttl = time.Second
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledHolder$", "-test.v")
	cmd.Env = append(os.Environ(), envChild+"="+pool.Config().ConnString())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var token uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "TOKEN "); ok {
			token, err = strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if token == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child printed no token: %v", sc.Err())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	l, err := pglock.New(pool, pglock.Options{Options: lock.Options{TTL: ttl}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The child refreshes its lease: still held after several TTLs.
	time.Sleep(2 * ttl)
	if _, err := l.TryAcquire(t.Context(), childKey); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("TryAcquire while the child holds the key = %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = cmd.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	le, err := l.Acquire(ctx, childKey)
	if err != nil {
		t.Fatalf("key not free after the holder was killed: %v", err)
	}
	t.Logf("key free %v after SIGKILL; tokens %d then %d", time.Since(killed), token, le.Token())
	if uint64(le.Token()) <= token {
		t.Errorf("next holder's token %d is not greater than the killed holder's %d", le.Token(), token)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func killedHolderChild(t *testing.T, dsn string) {
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	l, err := pglock.New(pool, pglock.Options{Options: lock.Options{TTL: time.Second, AutoRefresh: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.Acquire(t.Context(), childKey)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("TOKEN %d\n", le.Token())
	<-le.Done() // killed before this returns
	t.Fatalf("child's lease ended: %v", le.Err())
}
