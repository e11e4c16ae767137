package racelab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/sqlcc"
)

// deadlockWaitLimit is how long a lock-library worker waits for its second
// key before it declares a deadlock, releases its first key and retries.
const deadlockWaitLimit = 150 * time.Millisecond

// deadlockScenario is S10: two workers lock the same two things in opposite
// orders. Fixed: one canonical order. (SQLite has no row locks — a write
// transaction locks the whole database — so this deadlock cannot happen
// there; the lab runs it on memlock and filelock, and on PostgreSQL and
// MySQL row locks.)
func deadlockScenario() *Scenario {
	return &Scenario{
		ID: 6, Name: "deadlock", Title: "Deadlock from opposite lock order",
		Seeds: "S10", Unit: "deadlocks", Workers: 4, Ops: 8,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range []string{Memlock, Filelock, Redis, Postgres, MySQL} {
				// Each broken operation may cost a wait limit (or PostgreSQL's
				// deadlock_timeout): few operations show it.
				ops := 3
				if en == Redis || en == Postgres {
					ops = 2
				}
				cs = append(cs,
					Case{Variant: "opposite order", Kind: Broken, Engine: en, Ops: ops, run: deadlock(false)},
					Case{Variant: "canonical order", Kind: Fixed, Engine: en, run: deadlock(true)},
				)
			}
			return cs
		},
	}
}

func deadlock(sorted bool) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		keys := func(w int) []int64 {
			k := []int64{1, 2}
			if w%2 == 1 {
				k = []int64{2, 1}
			}
			if sorted {
				slices.Sort(k)
			}
			return k
		}
		var deadlocks atomic.Int64
		if isDB(rc.engineOf()) {
			return dbDeadlock(ctx, rc, keys, &deadlocks)
		}
		l, err := rc.locker(ctx, rc.engineOf(), 0, deadlockWaitLimit)
		if err != nil {
			return 0, "", err
		}
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			ks := keys(w)
			for {
				first, err := l.Acquire(ctx, rc.key(fmt.Sprint(ks[0])))
				if errors.Is(err, lock.ErrWaitLimit) {
					// The first key's holder is itself stuck in a deadlock.
					o.retry()
					continue
				}
				if err != nil {
					return err
				}
				rc.widen()
				second, err := l.Acquire(ctx, rc.key(fmt.Sprint(ks[1])))
				if errors.Is(err, lock.ErrWaitLimit) {
					// Each holds what the other wants: give up, back off, retry.
					deadlocks.Add(1)
					o.retry()
					if err := first.Release(ctx); err != nil {
						return err
					}
					time.Sleep(rand.N(20 * time.Millisecond))
					continue
				}
				if err != nil {
					return err
				}
				o.attempt()
				rc.widen()
				return errors.Join(second.Release(ctx), first.Release(ctx))
			}
		})
		return deadlocks.Load(), fmt.Sprintf("%d lock waits passed %v (each a deadlock broken by the wait limit)", deadlocks.Load(), deadlockWaitLimit), err
	}
}

func dbDeadlock(ctx context.Context, rc *runCtx, keys func(int) []int64, deadlocks *atomic.Int64) (int64, string, error) {
	if rc.engineOf() == Postgres && !strings.Contains(rc.env.cfg.Postgres, "deadlock_timeout") {
		// PostgreSQL looks for deadlocks after deadlock_timeout (1s); a
		// shorter one keeps the lab quick where the role may set it.
		saved := rc.env.cfg.Postgres
		sep := "?"
		if strings.Contains(saved, "?") {
			sep = "&"
		}
		rc.env.cfg.Postgres = saved + sep + "deadlock_timeout=50ms"
		d, err := rc.db(ctx, Postgres)
		rc.env.cfg.Postgres = saved
		if err == nil {
			return dbDeadlockOn(ctx, rc, d, keys, deadlocks)
		}
	}
	d, err := rc.db(ctx, rc.engineOf())
	if err != nil {
		return 0, "", err
	}
	return dbDeadlockOn(ctx, rc, d, keys, deadlocks)
}

func dbDeadlockOn(ctx context.Context, rc *runCtx, d *database, keys func(int) []int64, deadlocks *atomic.Int64) (int64, string, error) {
	if err := rc.create(ctx, d, "pairs", "CREATE TABLE {pairs} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)"); err != nil {
		return 0, "", err
	}
	if err := d.exec(ctx, "INSERT INTO {pairs} (id, n) VALUES (1, 0), (2, 0)"); err != nil {
		return 0, "", err
	}
	t := d.table("pairs")
	err := rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
		ks := keys(w)
		return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
			err := func() error {
				if err := sqlcc.LockRow(ctx, tx, t, ks[0], sqlcc.LockOptions{}, nil); err != nil {
					return err
				}
				rc.widen()
				if err := sqlcc.LockRow(ctx, tx, t, ks[1], sqlcc.LockOptions{}, nil); err != nil {
					return err
				}
				o.attempt()
				_, err := tx.ExecContext(ctx, d.q("UPDATE {pairs} SET n = n + 1 WHERE id IN (1, 2)"))
				return err
			}()
			if sqlcc.IsDeadlock(err) {
				deadlocks.Add(1) // RunTx rolls back and runs the transaction again
			}
			return err
		})
	})
	return deadlocks.Load(), fmt.Sprintf("%d transactions aborted as deadlock victims and retried", deadlocks.Load()), err
}
