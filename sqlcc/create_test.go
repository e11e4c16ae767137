package sqlcc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/sqlcc"
)

// TestDuplicateCreate is S1/S11: check-then-insert lets concurrent creators
// pass the check and the unique key rejects all but one ("Duplicate entry");
// CreateOrGet hands every creator the one row; a parent row lock makes
// creator B wait for A.
func TestDuplicateCreate(t *testing.T) {
	const names = 10
	forEachEngine(t, func(t *testing.T, e *env) {
		e.exec(t, "CREATE TABLE items (id BIGINT PRIMARY KEY, status BIGINT NOT NULL DEFAULT 0)")
		e.exec(t, "CREATE TABLE products (id AUTOINC, name VARCHAR(100) NOT NULL, item_id BIGINT NOT NULL, CONSTRAINT products_name_key UNIQUE (name))")
		products := e.table("products")
		items := e.table("items")
		for i := range int64(3 * names) {
			e.exec(t, "INSERT INTO items (id) VALUES (?)", i+1)
		}
		methods := []struct {
			name   string
			broken bool
			create func(ctx context.Context, name string, item int64) (id int64, created bool, err error)
		}{
			{name: "check-then-insert", broken: true, create: func(ctx context.Context, name string, item int64) (int64, bool, error) {
				var n int64
				if err := e.api().QueryRowContext(ctx, e.q("SELECT COUNT(*) FROM products WHERE name = ?"), name).Scan(&n); err != nil {
					return 0, false, err
				}
				if n > 0 {
					return 0, false, nil
				}
				widen()
				_, err := e.api().ExecContext(ctx, e.q("INSERT INTO products (name, item_id) VALUES (?, ?)"), name, item)
				return 0, err == nil, err
			}},
			{name: "create-or-get", create: func(ctx context.Context, name string, item int64) (int64, bool, error) {
				var id int64
				created, err := e.api().CreateOrGet(ctx, sqlcc.Row{
					Table:  products,
					Unique: []string{"name"},
					Values: []sqlcc.Assignment{sqlcc.Set("name", name), sqlcc.Set("item_id", item)},
				}, &id)
				return id, created, err
			}},
			{name: "parent-row-lock", create: func(ctx context.Context, name string, item int64) (int64, bool, error) {
				var id int64
				var created bool
				err := e.runTx(ctx, txOpts, func(ctx context.Context, tx api) error {
					id, created = 0, false
					if err := tx.LockRow(ctx, items, item, sqlcc.LockOptions{}, nil); err != nil {
						return err
					}
					err := tx.QueryRowContext(ctx, e.q("SELECT id FROM products WHERE name = ?"), name).Scan(&id)
					if err == nil {
						return nil // not creatable: A already created it
					}
					if !errors.Is(err, sql.ErrNoRows) {
						return err
					}
					widen()
					if _, err := tx.ExecContext(ctx, e.q("INSERT INTO products (name, item_id) VALUES (?, ?)"), name, item); err != nil {
						return err
					}
					if err := tx.QueryRowContext(ctx, e.q("SELECT id FROM products WHERE name = ?"), name).Scan(&id); err != nil {
						return err
					}
					_, err = tx.ExecContext(ctx, e.q("UPDATE items SET status = 2 WHERE id = ?"), item)
					created = true
					return err
				})
				return id, created, err
			}},
		}
		for mi, m := range methods {
			t.Run(m.name, func(t *testing.T) {
				var dups atomic.Int64
				for i := range names {
					name := fmt.Sprintf("%s-%d", m.name, i)
					item := int64(mi*names + i + 1)
					var creators atomic.Int64
					ids := make([]int64, workers)
					parallel(workers, func(w int) {
						id, created, err := m.create(t.Context(), name, item)
						switch {
						case m.broken && sqlcc.IsUniqueViolation(err):
							dups.Add(1)
							if c := sqlcc.Classify(err); e.dialect == sqlcc.Postgres && c.Constraint != "products_name_key" {
								t.Errorf("constraint %q, want products_name_key", c.Constraint)
							}
						case err != nil:
							t.Errorf("worker %d: %v", w, err)
						}
						if created {
							creators.Add(1)
						}
						ids[w] = id
					})
					if n := e.queryInt(t, "SELECT COUNT(*) FROM products WHERE name = ?", name); n != 1 {
						t.Errorf("%s: %d rows", name, n)
					}
					if creators.Load() != 1 {
						t.Errorf("%s: %d callers created it, want 1", name, creators.Load())
					}
					if !m.broken {
						for w, id := range ids {
							if id != ids[0] || id == 0 {
								t.Errorf("%s: worker %d got id %d, worker 0 got %d", name, w, id, ids[0])
							}
						}
					}
				}
				t.Logf("%d duplicate-key errors over %d names", dups.Load(), names)
				if m.broken && dups.Load() == 0 {
					t.Errorf("check-then-insert raised no duplicate-key error: race window too narrow")
				}
			})
		}

		t.Run("B-waits-for-A", func(t *testing.T) {
			ctx := t.Context()
			const item, name = int64(3 * names), "waits"
			locked := make(chan struct{})
			var committed time.Time
			var bLocked time.Time
			var bSaw int64
			var wg sync.WaitGroup
			wg.Go(func() {
				err := e.runTx(ctx, sqlcc.TxOptions{Attempts: 1}, func(ctx context.Context, tx api) error {
					if err := tx.LockRow(ctx, items, item, sqlcc.LockOptions{}, nil); err != nil {
						return err
					}
					close(locked)
					time.Sleep(300 * time.Millisecond)
					_, err := tx.ExecContext(ctx, e.q("INSERT INTO products (name, item_id) VALUES (?, ?)"), name, item)
					committed = time.Now()
					return err
				})
				if err != nil {
					t.Errorf("A: %v", err)
				}
			})
			<-locked
			err := e.runTx(ctx, sqlcc.TxOptions{Attempts: 1}, func(ctx context.Context, tx api) error {
				if err := tx.LockRow(ctx, items, item, sqlcc.LockOptions{}, nil); err != nil {
					return err
				}
				bLocked = time.Now()
				return tx.QueryRowContext(ctx, e.q("SELECT COUNT(*) FROM products WHERE name = ?"), name).Scan(&bSaw)
			})
			wg.Wait()
			if err != nil {
				t.Fatalf("B: %v", err)
			}
			if bLocked.Before(committed) {
				t.Errorf("B got the parent lock %v before A committed", committed.Sub(bLocked))
			}
			if bSaw != 1 {
				t.Errorf("B saw %d products after waiting, want A's 1", bSaw)
			}
		})
	})
}
