package racelab

import (
	"context"
	"database/sql"
	"math"
	"time"

	"github.com/haita/haita/sqlcc"
)

var (
	// retryOpts lets the optimistic variants survive heavy contention.
	retryOpts = sqlcc.RetryOptions{Attempts: 5000, BaseDelay: 200 * time.Microsecond, MaxDelay: 5 * time.Millisecond}
	// txOpts lets the pessimistic variants survive deadlock and busy retries.
	txOpts = sqlcc.TxOptions{Attempts: 200, BaseDelay: 200 * time.Microsecond, MaxDelay: 10 * time.Millisecond}
)

// dbEngines are the database engines in preference order.
var dbEngines = []string{SQLite, Postgres, MySQL}

// dbCounterScenario is the lost update in a database row (S4) and its three
// cures: a row lock (S3, S9), a version check with retry (S2) and an atomic
// conditional update.
func dbCounterScenario() *Scenario {
	return &Scenario{
		ID: 3, Name: "db-counter", Title: "Lost update in a database row",
		Seeds: "S2 S3 S4 S9", Unit: "lost updates", Workers: 8, Ops: 15,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range dbEngines {
				cs = append(cs,
					Case{Variant: "read-modify-write", Kind: Broken, Engine: en, run: dbCounter("rmw")},
					Case{Variant: "row lock (pessimistic)", Kind: Fixed, Engine: en, run: dbCounter("lock")},
					Case{Variant: "version check (optimistic)", Kind: Fixed, Engine: en, run: dbCounter("version")},
					Case{Variant: "atomic update", Kind: Fixed, Engine: en, run: dbCounter("add")},
				)
			}
			return cs
		},
	}
}

func dbCounter(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "counters", "CREATE TABLE {counters} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, version BIGINT NOT NULL DEFAULT 0)"); err != nil {
			return 0, "", err
		}
		if err := d.exec(ctx, "INSERT INTO {counters} (id, n, version) VALUES (1, 17, 0)"); err != nil {
			return 0, "", err
		}
		t := d.table("counters")
		read := func(ctx context.Context, db sqlcc.DB) (n, v int64, err error) {
			err = db.QueryRowContext(ctx, d.q("SELECT n, version FROM {counters} WHERE id = 1")).Scan(&n, &v)
			return n, v, err
		}
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			switch impl {
			case "rmw":
				o.attempt()
				n, _, err := read(ctx, d.db)
				if err != nil {
					return err
				}
				rc.widen()
				return d.exec(ctx, "UPDATE {counters} SET n = ? WHERE id = 1", n+1)
			case "lock":
				return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
					var n int64
					if err := sqlcc.LockRow(ctx, tx, t, 1, sqlcc.LockOptions{}, []string{"n"}, &n); err != nil {
						return err
					}
					o.attempt()
					rc.widen()
					_, err := tx.ExecContext(ctx, d.q("UPDATE {counters} SET n = ? WHERE id = 1"), n+1)
					return err
				})
			case "version":
				return sqlcc.Retry(ctx, retryOpts, func(ctx context.Context) error {
					o.attempt()
					n, v, err := read(ctx, d.db)
					if err != nil {
						return err
					}
					rc.widen()
					_, err = sqlcc.UpdateVersioned(ctx, d.db, t, 1, v, sqlcc.Set("n", n+1))
					return err
				})
			default:
				o.attempt()
				rc.widen() // the same work, before the one-statement update
				_, err := sqlcc.Add(ctx, d.db, t, 1, "n", 1, math.MinInt64)
				return err
			}
		})
		got, rerr := d.int(ctx, "SELECT n FROM {counters} WHERE id = 1")
		if err == nil {
			err = rerr
		}
		return counterVerdict(17, rc.stats.ops.Load(), got, err)
	}
}
