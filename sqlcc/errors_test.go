package sqlcc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/sqlcc"
)

// TestErrorClasses provokes every error class for real on each engine that
// has it, and checks the class, the retry scope and that wrapped and joined
// errors still classify.
func TestErrorClasses(t *testing.T) {
	if c := sqlcc.Classify(nil); c.Class != sqlcc.ClassOther {
		t.Errorf("Classify(nil) = %+v", c)
	}
	if c := sqlcc.Classify(io.EOF); c.Class != sqlcc.ClassOther || c.Dialect != sqlcc.Unknown {
		t.Errorf("Classify(io.EOF) = %+v", c)
	}
	forEachEngine(t, func(t *testing.T, e *env) {
		e.exec(t, "CREATE TABLE ec (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, u BIGINT, CONSTRAINT ec_u_key UNIQUE (u))")
		e.exec(t, "INSERT INTO ec (id, v, u) VALUES (1, 0, 1), (2, 0, 2)")
		tbl := e.table("ec")
		check := func(t *testing.T, err error, class sqlcc.Class, scope sqlcc.Scope) {
			t.Helper()
			if err == nil {
				t.Fatalf("no error, want %v", class)
			}
			for _, e2 := range []error{err, fmt.Errorf("outer: %w", err), errors.Join(io.EOF, err)} {
				c := sqlcc.Classify(e2)
				if c.Class != class || c.Retry != scope || c.Dialect != e.dialect {
					t.Errorf("Classify(%v) = %+v, want class %v, retry %v", e2, c, class, scope)
				}
			}
			is := map[sqlcc.Class]func(error) bool{
				sqlcc.ClassUniqueViolation: sqlcc.IsUniqueViolation, sqlcc.ClassDeadlock: sqlcc.IsDeadlock,
				sqlcc.ClassSerializationFailure: sqlcc.IsSerializationFailure, sqlcc.ClassLockTimeout: sqlcc.IsLockTimeout,
				sqlcc.ClassBusy: sqlcc.IsBusy,
			}
			for c, f := range is {
				if f(err) != (c == class) {
					t.Errorf("Is%v(%v) = %v", c, err, f(err))
				}
			}
			t.Logf("%v: code %s: %v", class, sqlcc.Classify(err).Code, err)
		}
		begin := func(t *testing.T) api { return e.begin(t, sql.LevelDefault) }

		t.Run("unique", func(t *testing.T) {
			_, err := e.api().ExecContext(t.Context(), e.q("INSERT INTO ec (id, v, u) VALUES (3, 0, 1)"))
			check(t, err, sqlcc.ClassUniqueViolation, sqlcc.RetryNone)
			if c := sqlcc.Classify(err); e.dialect == sqlcc.Postgres && c.Constraint != "ec_u_key" {
				t.Errorf("constraint %q, want ec_u_key", c.Constraint)
			}
			_, err = e.api().ExecContext(t.Context(), e.q("INSERT INTO ec (id, v, u) VALUES (1, 0, 9)"))
			check(t, err, sqlcc.ClassUniqueViolation, sqlcc.RetryNone) // primary key
		})

		t.Run("deadlock", func(t *testing.T) {
			if e.dialect == sqlcc.SQLite {
				t.Skip("SQLite reports no deadlock: a writer that would wait on a reader-turned-writer gets SQLITE_BUSY at once (see busy/upgrade)")
			}
			tx1, tx2 := begin(t), begin(t)
			upd := e.q("UPDATE ec SET v = v + 1 WHERE id = ?")
			if _, err := tx1.ExecContext(t.Context(), upd, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := tx2.ExecContext(t.Context(), upd, 2); err != nil {
				t.Fatal(err)
			}
			errs := make([]error, 2)
			parallel(2, func(w int) {
				tx, id := tx1, 2
				if w == 1 {
					tx, id = tx2, 1
					time.Sleep(50 * time.Millisecond)
				}
				_, errs[w] = tx.ExecContext(t.Context(), upd, id)
				if errs[w] != nil {
					tx.Rollback() // let the other one finish
				}
			})
			err := errors.Join(errs...)
			if errs[0] != nil && errs[1] != nil {
				t.Fatalf("both failed: %v", err)
			}
			check(t, err, sqlcc.ClassDeadlock, sqlcc.RetryTransaction)
		})

		t.Run("serialization", func(t *testing.T) {
			ctx := t.Context()
			var tx api
			switch e.dialect {
			case sqlcc.Postgres:
				tx = e.begin(t, sql.LevelRepeatableRead)
			case sqlcc.MySQL:
				// MariaDB reports write skew under REPEATABLE READ only with
				// innodb_snapshot_isolation (10.6.18+, 10.11.8+).
				conn, cerr := e.db.Conn(ctx)
				if cerr != nil {
					t.Fatal(cerr)
				}
				defer conn.Close()
				if _, cerr := conn.ExecContext(ctx, "SET SESSION innodb_snapshot_isolation = ON"); cerr != nil {
					t.Skipf("no innodb_snapshot_isolation: %v", cerr)
				}
				stx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
				if err != nil {
					t.Fatal(err)
				}
				defer stx.Rollback()
				tx = api{db: stx, stx: stx}
			default:
				tx = begin(t)
			}
			var v int64
			if err := tx.QueryRowContext(ctx, e.q("SELECT v FROM ec WHERE id = ?"), 2).Scan(&v); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.ExecContext(ctx, e.q("UPDATE ec SET v = v + 1 WHERE id = ?"), 2); err != nil {
				t.Fatal(err)
			}
			_, err := tx.ExecContext(ctx, e.q("UPDATE ec SET v = ? WHERE id = ?"), v+10, 2)
			check(t, err, sqlcc.ClassSerializationFailure, sqlcc.RetryTransaction)
		})

		t.Run("lock-timeout", func(t *testing.T) {
			ctx := t.Context()
			holder := begin(t)
			if err := holder.LockRow(ctx, tbl, 1, sqlcc.LockOptions{}, nil); err != nil {
				t.Fatal(err)
			}
			if e.dialect == sqlcc.SQLite {
				// The database write lock is held: NOWAIT is busy at once,
				// SKIP LOCKED locks nothing.
				tx := begin(t)
				start := time.Now()
				err := tx.LockRow(ctx, tbl, 2, sqlcc.LockOptions{Mode: sqlcc.NoWait}, nil)
				check(t, err, sqlcc.ClassBusy, sqlcc.RetryTransaction)
				if d := time.Since(start); d > time.Second {
					t.Errorf("NoWait waited %v", d)
				}
				got, err := tx.LockKeys(ctx, tbl, []int64{2, 1}, sqlcc.LockOptions{Mode: sqlcc.SkipLocked})
				if err != nil || len(got) != 0 {
					t.Errorf("SkipLocked = %v, %v; want none, nil", got, err)
				}
				var bt int64
				if err := tx.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&bt); err != nil || bt != 5000 {
					t.Errorf("busy_timeout after NoWait = %d, %v; want 5000 restored", bt, err)
				}
				return
			}
			if e.dialect == sqlcc.Postgres {
				// Timeout applies to the locking statements only: the
				// transaction's own setting is back afterwards.
				tx := begin(t)
				if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '7s'"); err != nil {
					t.Fatal(err)
				}
				if err := tx.LockRow(ctx, tbl, 2, sqlcc.LockOptions{Timeout: 100 * time.Millisecond}, nil); err != nil {
					t.Fatal(err)
				}
				var lt string
				if err := tx.QueryRowContext(ctx, "SHOW lock_timeout").Scan(&lt); err != nil || lt != "7s" {
					t.Errorf("lock_timeout after LockRow = %q, %v; want 7s restored", lt, err)
				}
				tx.Rollback()
			}
			tx := begin(t)
			got, err := tx.LockKeys(ctx, tbl, []int64{2, 1, 2}, sqlcc.LockOptions{Mode: sqlcc.SkipLocked})
			if err != nil || len(got) != 1 || got[0] != 2 {
				t.Errorf("SkipLocked = %v, %v; want [2]", got, err)
			}
			err = tx.LockRow(ctx, tbl, 1, sqlcc.LockOptions{Mode: sqlcc.NoWait}, nil)
			check(t, err, sqlcc.ClassLockTimeout, map[sqlcc.Dialect]sqlcc.Scope{sqlcc.Postgres: sqlcc.RetryTransaction, sqlcc.MySQL: sqlcc.RetryStatement}[e.dialect])

			tx = begin(t)
			var lwt0 int64
			if e.dialect == sqlcc.MySQL {
				if err := tx.QueryRowContext(ctx, "SELECT @@SESSION.innodb_lock_wait_timeout").Scan(&lwt0); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			err = tx.LockRow(ctx, tbl, 1, sqlcc.LockOptions{Timeout: 100 * time.Millisecond}, nil)
			check(t, err, sqlcc.ClassLockTimeout, map[sqlcc.Dialect]sqlcc.Scope{sqlcc.Postgres: sqlcc.RetryTransaction, sqlcc.MySQL: sqlcc.RetryStatement}[e.dialect])
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Timeout waited %v", d)
			}
			if e.dialect == sqlcc.MySQL {
				// Statement-scoped: the transaction goes on, and the
				// session's timeout is back to its default.
				var lwt int64
				if err := tx.QueryRowContext(ctx, "SELECT @@SESSION.innodb_lock_wait_timeout").Scan(&lwt); err != nil || lwt != lwt0 {
					t.Errorf("innodb_lock_wait_timeout after = %d, %v; want %d restored", lwt, err, lwt0)
				}
			}
		})

		t.Run("busy", func(t *testing.T) {
			if e.dialect != sqlcc.SQLite {
				t.Skip("busy is SQLite's class; server engines lock rows")
			}
			ctx := t.Context()
			holder := begin(t)
			if err := holder.LockRow(ctx, tbl, 1, sqlcc.LockOptions{}, nil); err != nil {
				t.Fatal(err)
			}
			// A second connection with a short busy_timeout.
			other, err := sql.Open("sqlite", e.dsn+"&_pragma=busy_timeout(50)")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			_, err = other.ExecContext(ctx, "UPDATE ec SET v = 5 WHERE id = 2")
			check(t, err, sqlcc.ClassBusy, sqlcc.RetryTransaction)

			tx := begin(t)
			err = tx.LockRow(ctx, tbl, 2, sqlcc.LockOptions{Timeout: 50 * time.Millisecond}, nil)
			check(t, err, sqlcc.ClassBusy, sqlcc.RetryTransaction)
		})
	})
}

// TestDeadlockRetry is S10: two transactions lock two rows in opposite
// order; the engine breaks the deadlock and RunTx runs the victim again to
// success.
func TestDeadlockRetry(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.exec(t, "CREATE TABLE dl (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
		e.exec(t, "INSERT INTO dl (id, n) VALUES (1, 0), (2, 0)")
		var first sync.WaitGroup
		first.Add(2)
		var seen sync.Map // class -> true
		var calls atomic.Int64
		parallel(2, func(w int) {
			order := []int64{1, 2}
			if w == 1 {
				order = []int64{2, 1}
			}
			attempt := 0
			err := e.runTx(t.Context(), sqlcc.TxOptions{Attempts: 10}, func(ctx context.Context, tx api) error {
				calls.Add(1)
				attempt++
				for i, id := range order {
					if e.dialect == sqlcc.SQLite && i == 0 {
						// SQLite's equivalent: both read, then both write.
						var n int64
						if err := tx.QueryRowContext(ctx, "SELECT n FROM dl WHERE id = ?", id).Scan(&n); err != nil {
							return err
						}
					} else if _, err := tx.ExecContext(ctx, e.q("UPDATE dl SET n = n + 1 WHERE id = ?"), id); err != nil {
						seen.Store(sqlcc.Classify(err).Class, true)
						return err
					}
					if i == 0 && attempt == 1 {
						first.Done()
						first.Wait()
					}
				}
				if e.dialect == sqlcc.SQLite {
					if _, err := tx.ExecContext(ctx, "UPDATE dl SET n = n + 1 WHERE id = ?", order[0]); err != nil {
						seen.Store(sqlcc.Classify(err).Class, true)
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
		})
		var classes []sqlcc.Class
		seen.Range(func(k, _ any) bool { classes = append(classes, k.(sqlcc.Class)); return true })
		t.Logf("%d calls, classes seen %v", calls.Load(), classes)
		want := sqlcc.ClassDeadlock
		if e.dialect == sqlcc.SQLite {
			want = sqlcc.ClassBusy
		}
		if _, ok := seen.Load(want); !ok {
			if _, ok2 := seen.Load(sqlcc.ClassSerializationFailure); !(ok2 && e.dialect == sqlcc.SQLite) {
				t.Errorf("no %v provoked", want)
			}
		}
		if calls.Load() < 3 {
			t.Errorf("%d calls: the victim was not run again", calls.Load())
		}
		for _, id := range []int64{1, 2} {
			if n := e.queryInt(t, "SELECT n FROM dl WHERE id = ?", id); n != 2 {
				t.Errorf("row %d: n = %d, want 2 (both transactions applied once)", id, n)
			}
		}
	})
}

// TestCommitUnknown breaks the connection before COMMIT: RunTx must not run
// the function again and must say the outcome is unknown.
func TestCommitUnknown(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		var idQ, killQ string
		switch e.dialect {
		case sqlcc.Postgres:
			idQ, killQ = "SELECT pg_backend_pid()", "SELECT pg_terminate_backend($1)"
		case sqlcc.MySQL:
			idQ, killQ = "SELECT CONNECTION_ID()", "KILL CONNECTION ?"
		default:
			t.Skip("SQLite is in-process: there is no connection to lose during COMMIT")
		}
		e.exec(t, "CREATE TABLE cu (id BIGINT PRIMARY KEY)")
		var calls int
		err := e.runTx(t.Context(), sqlcc.TxOptions{}, func(ctx context.Context, tx api) error {
			calls++
			var id int64
			if err := tx.QueryRowContext(ctx, idQ).Scan(&id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, e.q("INSERT INTO cu (id) VALUES (1)")); err != nil {
				return err
			}
			_, err := e.db.ExecContext(ctx, killQ, id)
			time.Sleep(100 * time.Millisecond)
			return err
		})
		if !errors.Is(err, sqlcc.ErrCommitUnknown) {
			t.Errorf("RunTx = %v, want ErrCommitUnknown", err)
		}
		if calls != 1 {
			t.Errorf("fn ran %d times, want 1", calls)
		}
		t.Logf("%v", err)
	})
}
