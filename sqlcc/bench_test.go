package sqlcc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/sqlcc"
)

// BenchmarkInventory decrements one hot inventory row on PostgreSQL with 1,
// 8 and 32 workers, through haita and through the same SQL written by hand,
// for the optimistic, pessimistic and atomic paths. It reports ops/s and
// retries/op (optimistic conflicts; the other paths never retry here).
func BenchmarkInventory(b *testing.B) {
	dsn := testserver.Postgres(b)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(40)
	ctx := b.Context()
	if _, err := db.ExecContext(ctx, "CREATE TABLE inv (id BIGINT PRIMARY KEY, qty BIGINT NOT NULL, version BIGINT NOT NULL DEFAULT 0)"); err != nil {
		b.Fatal(err)
	}
	tbl := sqlcc.Table{Dialect: sqlcc.Postgres, Name: "inv"}
	ro := sqlcc.RetryOptions{Attempts: 1 << 20, BaseDelay: 100 * time.Microsecond, MaxDelay: 5 * time.Millisecond}

	type op func(ctx context.Context, retries *atomic.Int64) error
	paths := []struct {
		path, impl string
		fn         op
	}{
		{"optimistic", "haita", func(ctx context.Context, retries *atomic.Int64) error {
			first := true
			return sqlcc.Retry(ctx, ro, func(ctx context.Context) error {
				if !first {
					retries.Add(1)
				}
				first = false
				var qty, v int64
				if err := db.QueryRowContext(ctx, "SELECT qty, version FROM inv WHERE id = $1", 1).Scan(&qty, &v); err != nil {
					return err
				}
				_, err := sqlcc.UpdateVersioned(ctx, db, tbl, 1, v, sqlcc.Set("qty", qty-1))
				return err
			})
		}},
		{"optimistic", "sql", func(ctx context.Context, retries *atomic.Int64) error {
			for i := 0; ; i++ {
				var qty, v int64
				if err := db.QueryRowContext(ctx, "SELECT qty, version FROM inv WHERE id = $1", 1).Scan(&qty, &v); err != nil {
					return err
				}
				res, err := db.ExecContext(ctx, "UPDATE inv SET qty = $1, version = version + 1 WHERE id = $2 AND version = $3", qty-1, 1, v)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 1 {
					return nil
				}
				retries.Add(1)
				time.Sleep(jitter(i, ro.BaseDelay, ro.MaxDelay))
			}
		}},
		{"pessimistic", "haita", func(ctx context.Context, _ *atomic.Int64) error {
			return sqlcc.RunTx(ctx, db, sqlcc.TxOptions{}, func(ctx context.Context, tx *sql.Tx) error {
				var qty int64
				if err := sqlcc.LockRow(ctx, tx, tbl, 1, sqlcc.LockOptions{}, []string{"qty"}, &qty); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "UPDATE inv SET qty = $1 WHERE id = $2", qty-1, 1)
				return err
			})
		}},
		{"pessimistic", "sql", func(ctx context.Context, _ *atomic.Int64) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			var qty int64
			if err := tx.QueryRowContext(ctx, "SELECT qty FROM inv WHERE id = $1 FOR UPDATE", 1).Scan(&qty); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE inv SET qty = $1 WHERE id = $2", qty-1, 1); err != nil {
				return err
			}
			return tx.Commit()
		}},
		{"atomic", "haita", func(ctx context.Context, _ *atomic.Int64) error {
			_, err := sqlcc.Add(ctx, db, tbl, 1, "qty", -1, 0)
			return err
		}},
		{"atomic", "sql", func(ctx context.Context, _ *atomic.Int64) error {
			var qty int64
			err := db.QueryRowContext(ctx, "UPDATE inv SET qty = qty - $1 WHERE id = $2 AND qty >= $1 RETURNING qty", 1, 1).Scan(&qty)
			if errors.Is(err, sql.ErrNoRows) {
				return errors.New("sold out")
			}
			return err
		}},
	}
	for _, workers := range []int{1, 8, 32} {
		for _, p := range paths {
			b.Run(fmt.Sprintf("path=%s/impl=%s/workers=%d", p.path, p.impl, workers), func(b *testing.B) {
				if _, err := db.ExecContext(ctx, "DELETE FROM inv"); err != nil {
					b.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, "INSERT INTO inv (id, qty) VALUES (1, $1)", int64(1)<<50); err != nil {
					b.Fatal(err)
				}
				var retries atomic.Int64
				work := make(chan struct{})
				var failed atomic.Pointer[error]
				var wg sync.WaitGroup
				for range workers {
					wg.Go(func() {
						for range work {
							if err := p.fn(ctx, &retries); err != nil {
								failed.CompareAndSwap(nil, &err)
							}
						}
					})
				}
				start := time.Now()
				n := 0
				for b.Loop() {
					work <- struct{}{}
					n++
				}
				close(work)
				wg.Wait()
				elapsed := time.Since(start)
				if e := failed.Load(); e != nil {
					b.Fatal(*e)
				}
				b.ReportMetric(float64(n)/elapsed.Seconds(), "ops/s")
				b.ReportMetric(float64(retries.Load())/float64(n), "retries/op")
			})
		}
	}
}

// jitter is the hand-written optimistic loop's backoff: the same full-jitter
// exponential policy as sqlcc.Retry, so the two differ only in the library.
func jitter(i int, base, maxd time.Duration) time.Duration {
	c := base
	for ; i > 0 && c < maxd; i-- {
		c *= 2
	}
	return rand.N(min(c, maxd) + 1)
}
