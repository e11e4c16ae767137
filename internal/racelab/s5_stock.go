package racelab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/haita/haita/sqlcc"
)

// stockScenario is seed 002's examples: selling the last items of a product
// (oversell) and transfers between accounts (money appears or vanishes).
func stockScenario() *Scenario {
	return &Scenario{
		ID: 5, Name: "stock", Title: "Inventory oversell and account balance",
		Seeds: "S3 S4 S10", Unit: "oversold units / wrong balances (in transfers)", Workers: 8, Ops: 10,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range dbEngines {
				cs = append(cs,
					Case{Variant: "stock: read-check-write", Kind: Broken, Engine: en, run: stock("rmw")},
					Case{Variant: "stock: row lock", Kind: Fixed, Engine: en, run: stock("lock")},
					Case{Variant: "stock: conditional update", Kind: Fixed, Engine: en, run: stock("add")},
					Case{Variant: "transfer: read-write", Kind: Broken, Engine: en, run: transfer("rmw")},
					Case{Variant: "transfer: row locks in key order", Kind: Fixed, Engine: en, run: transfer("lock")},
					Case{Variant: "transfer: conditional updates", Kind: Fixed, Engine: en, run: transfer("add")},
				)
			}
			return cs
		},
	}
}

// stock sells one unit per operation from a stock of half the operations.
// The invariant: units sold = units taken from stock.
func stock(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		initial := int64(rc.workers * rc.ops / 2)
		if err := rc.create(ctx, d, "products", "CREATE TABLE {products} (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL)"); err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "orders", "CREATE TABLE {orders} ("+d.autoID()+", product BIGINT NOT NULL)"); err != nil {
			return 0, "", err
		}
		if err := d.exec(ctx, "INSERT INTO {products} (id, stock) VALUES (1, ?)", initial); err != nil {
			return 0, "", err
		}
		products := d.table("products")
		var soldOut atomic.Int64
		order := func(ctx context.Context, db sqlcc.DB) error {
			_, err := db.ExecContext(ctx, d.q("INSERT INTO {orders} (product) VALUES (1)"))
			return err
		}
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			switch impl {
			case "rmw": // if item.quantity > 0: item.quantity -= 1; item.save()
				o.attempt()
				s, err := d.int(ctx, "SELECT stock FROM {products} WHERE id = 1")
				if err != nil {
					return err
				}
				if s <= 0 {
					soldOut.Add(1)
					return nil
				}
				rc.widen()
				if err := d.exec(ctx, "UPDATE {products} SET stock = ? WHERE id = 1", s-1); err != nil {
					return err
				}
				return order(ctx, d.db)
			case "lock": // select_for_update()
				return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
					var s int64
					if err := sqlcc.LockRow(ctx, tx, products, 1, sqlcc.LockOptions{}, []string{"stock"}, &s); err != nil {
						return err
					}
					o.attempt()
					if s <= 0 {
						soldOut.Add(1)
						return nil
					}
					rc.widen()
					if _, err := tx.ExecContext(ctx, d.q("UPDATE {products} SET stock = ? WHERE id = 1"), s-1); err != nil {
						return err
					}
					return order(ctx, tx)
				})
			default: // UPDATE ... SET stock = stock - 1 WHERE stock >= 1
				return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
					o.attempt()
					rc.widen()
					_, err := sqlcc.Add(ctx, tx, products, 1, "stock", -1, 0)
					if errors.Is(err, sqlcc.ErrOutOfRange) {
						soldOut.Add(1)
						return nil
					}
					if err != nil {
						return err
					}
					return order(ctx, tx)
				})
			}
		})
		final, rerr := d.int(ctx, "SELECT stock FROM {products} WHERE id = 1")
		orders, rerr2 := d.int(ctx, "SELECT COUNT(*) FROM {orders}")
		err = errors.Join(err, rerr, rerr2)
		v := orders - (initial - final)
		return v, fmt.Sprintf("stock %d, %d orders, %d left: %d units sold that stock never lost (%d requests saw sold out)", initial, orders, final, v, soldOut.Load()), err
	}
}

const (
	accounts       = 4
	accountBalance = 1000
	transferAmount = 10
	// transferWork is the work of a transfer between its reads and its
	// writes, in race windows: two rows written give the other workers
	// more to overlap with than one.
	transferWork = 5
)

// transfer moves money between accounts; the invariant: the total stays.
func transfer(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "accounts", "CREATE TABLE {accounts} (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)"); err != nil {
			return 0, "", err
		}
		for i := 1; i <= accounts; i++ {
			if err := d.exec(ctx, "INSERT INTO {accounts} (id, balance) VALUES (?, ?)", i, accountBalance); err != nil {
				return 0, "", err
			}
		}
		t := d.table("accounts")
		balance := func(ctx context.Context, db sqlcc.DB, id int64) (int64, error) {
			var b int64
			err := db.QueryRowContext(ctx, d.q("SELECT balance FROM {accounts} WHERE id = ?"), id).Scan(&b)
			return b, err
		}
		set := func(ctx context.Context, db sqlcc.DB, id, b int64) error {
			_, err := db.ExecContext(ctx, d.q("UPDATE {accounts} SET balance = ? WHERE id = ?"), b, id)
			return err
		}
		// want holds each account's balance after the transfers that
		// reported success.
		var want [accounts + 1]atomic.Int64
		for i := 1; i <= accounts; i++ {
			want[i].Store(accountBalance)
		}
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			// Account 1 pays the others (payroll): debits and credits of
			// one account never cancel out in the check.
			from, to := int64(1), int64(2+(w+i)%(accounts-1))
			if err := transferOnce(ctx, rc, impl, d, t, balance, set, o, from, to); err != nil {
				return err
			}
			want[from].Add(-transferAmount)
			want[to].Add(transferAmount)
			return nil
		})
		var off, total int64
		for i := int64(1); i <= accounts; i++ {
			b, rerr := balance(ctx, d.db, i)
			err = errors.Join(err, rerr)
			off += abs(b - want[i].Load())
			total += b
		}
		return off / transferAmount, fmt.Sprintf("%d accounts of %d, %d transfers of %d: balances off by %d in all, total %d (want %d)", accounts, accountBalance, rc.stats.ops.Load(), transferAmount, off, total, accounts*accountBalance), err
	}
}

func transferOnce(ctx context.Context, rc *runCtx, impl string, d *database, t sqlcc.Table,
	balance func(context.Context, sqlcc.DB, int64) (int64, error), set func(context.Context, sqlcc.DB, int64, int64) error,
	o *op, from, to int64) error {
	switch impl {
	case "rmw":
		o.attempt()
		a, err := balance(ctx, d.db, from)
		if err != nil {
			return err
		}
		b, err := balance(ctx, d.db, to)
		if err != nil {
			return err
		}
		time.Sleep(transferWork * rc.window)
		if err := set(ctx, d.db, from, a-transferAmount); err != nil {
			return err
		}
		return set(ctx, d.db, to, b+transferAmount)
	case "lock":
		return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := sqlcc.LockKeys(ctx, tx, t, []int64{from, to}, sqlcc.LockOptions{}); err != nil {
				return err
			}
			o.attempt()
			a, err := balance(ctx, tx, from)
			if err != nil {
				return err
			}
			b, err := balance(ctx, tx, to)
			if err != nil {
				return err
			}
			time.Sleep(transferWork * rc.window)
			if err := set(ctx, tx, from, a-transferAmount); err != nil {
				return err
			}
			return set(ctx, tx, to, b+transferAmount)
		})
	default:
		return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
			o.attempt()
			time.Sleep(transferWork * rc.window)
			// Two one-statement updates (the debit bounded at zero)
			// in one transaction, applied in key order: in the
			// caller's order two opposite transfers deadlock (S10).
			debit := func() error {
				_, err := sqlcc.Add(ctx, tx, t, from, "balance", -transferAmount, 0)
				return err
			}
			credit := func() error {
				_, err := sqlcc.Add(ctx, tx, t, to, "balance", transferAmount, math.MinInt64)
				return err
			}
			if from < to {
				return joinFirst(debit, credit)
			}
			if err := credit(); err != nil {
				return err
			}
			return debit()
		})
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// joinFirst runs fs in order and returns the first error; later ones do not
// run (on PostgreSQL the transaction is aborted after an error anyway).
func joinFirst(fs ...func() error) error {
	for _, f := range fs {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}
