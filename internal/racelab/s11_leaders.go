package racelab

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haita/haita/election"
	"github.com/haita/haita/sqlcc"
)

// leadersScenario is S17/S19's "one leader runs the scheduler": schedulers
// campaign in one election (package election, on the engine's Locker) and
// the leader writes the shared state. A leader pauses past its lease's TTL
// (a GC pause, a stopped VM; the lease is not refreshed meanwhile) while
// another candidate is elected and writes; then it wakes up and writes
// again. Broken: it keeps a "leading" flag from the lease it got and never
// checks it, and writes unfenced, so two schedulers both act as leader and
// the older one's write lands after the newer one's. Fixed: the write
// carries the term, the leadership's fencing token (sqlcc.FencedUpdate),
// and the database refuses the older term.
func leadersScenario() *Scenario {
	return &Scenario{
		ID: 11, Name: "two-leaders", Title: "Two schedulers both believe they lead",
		Seeds: "S17, S19", Unit: "stale leader writes", Workers: 2, Ops: 2,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range []string{Memlock, Postgres, Redis, Etcd} {
				name := lockBackendName(en)
				cs = append(cs,
					Case{Variant: "election on " + name + ", leading flag kept, unfenced write", Kind: Broken, Engine: en, run: leaders(false)},
					Case{Variant: "election on " + name + ", write fenced by the term", Kind: Fixed, Engine: en, run: leaders(true)},
				)
			}
			return cs
		},
	}
}

// leadersTTL is the leases' TTL in scenario 10. etcd's is the server's
// minimum, which a single member raises any shorter TTL to.
func leadersTTL(engine string) time.Duration {
	if engine == Etcd {
		return 2 * time.Second
	}
	return 300 * time.Millisecond
}

// leaders runs rc.ops terms per scheduler: campaign, write, pause for one
// and a half TTLs, write again, resign. A violation is a write that the
// database accepted from a term older than one that had already written.
func leaders(fenced bool) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		engine := rc.engineOf()
		dbEngine := SQLite
		if engine == Postgres {
			dbEngine = Postgres
		}
		d, err := rc.db(ctx, dbEngine)
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "state", "CREATE TABLE {state} (id INT PRIMARY KEY, leader BIGINT NOT NULL, fence BIGINT)"); err != nil {
			return 0, "", err
		}
		if err := d.exec(ctx, "INSERT INTO {state} (id, leader, fence) VALUES (1, -1, NULL)"); err != nil {
			return 0, "", err
		}
		ttl := leadersTTL(engine)
		l, err := rc.locker(ctx, engine, ttl, 0)
		if err != nil {
			return 0, "", err
		}
		e, err := election.New(l, rc.key("leader"), election.Options{})
		if err != nil {
			return 0, "", err
		}
		var (
			mu                       sync.Mutex // orders writes with their accounting
			newest                   uint64     // the greatest term that wrote
			stale, accepted, refused int64
			wg                       sync.WaitGroup
		)
		write := func(ctx context.Context, w int, term uint64) error {
			mu.Lock()
			defer mu.Unlock()
			var err error
			if fenced {
				err = sqlcc.FencedUpdate(ctx, d.db, d.table("state"), 1, term, sqlcc.Set("leader", w))
				if errors.Is(err, sqlcc.ErrStaleToken) {
					refused++
					return nil
				}
			} else {
				err = d.exec(ctx, "UPDATE {state} SET leader = ? WHERE id = 1", w)
			}
			if err != nil {
				return err
			}
			accepted++
			if term < newest {
				stale++
			}
			newest = max(newest, term)
			return nil
		}
		errs := make([]error, rc.workers)
		for w := range rc.workers {
			wg.Go(func() {
				for i := 0; i < rc.ops && !rc.expired(); i++ {
					err := rc.stats.do(func(o *op) error {
						o.attempt()
						ld, err := e.Campaign(ctx)
						if err != nil {
							return err
						}
						leading := true // kept, never checked again: the bug
						term := uint64(ld.Term())
						if leading {
							if err := write(ctx, w, term); err != nil {
								return err
							}
						}
						time.Sleep(ttl * 3 / 2) // paused past the lease
						if leading {
							if err := write(ctx, w, term); err != nil {
								return err
							}
						}
						_ = ld.Resign(ctx) // lost meanwhile: ErrNotLeader
						return nil
					})
					if err != nil {
						errs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		how := "unfenced UPDATE"
		if fenced {
			how = "sqlcc.FencedUpdate with the term"
		}
		detail := fmt.Sprintf("%d schedulers, %d terms each, leases of %v paused for %v, %s on %s: %d writes accepted, %d refused, %d from a stale leader",
			rc.workers, rc.ops, ttl, ttl*3/2, how, dbEngine, accepted, refused, stale)
		return stale, detail, errors.Join(errs...)
	}
}
