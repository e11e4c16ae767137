package racelab

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/sqlcc"
)

// cronPeriod is the simulated schedule: a job every cronPeriod.
const cronPeriod = 100 * time.Millisecond

// cronSkews are the clock offsets of the schedulers (worker w gets
// cronSkews[w % len]): the later ones fire after the first one's job ended.
var cronSkews = []time.Duration{0, 45 * time.Millisecond, -40 * time.Millisecond, 20 * time.Millisecond}

// cronScenario is S17: a cron job configured on several schedulers whose
// clocks disagree. With no coordination every scheduler runs it; with a lock
// held only while the job runs, a scheduler whose clock is behind fires
// after the first run ended, finds the lock free and runs the same slot
// again. At most once per slot needs a durable marker per slot, taken under
// the lock (what package singleton does).
func cronScenario() *Scenario {
	return &Scenario{
		ID: 8, Name: "cron", Title: "A cron job on several schedulers with skewed clocks",
		Seeds: "S17", Unit: "double runs", Workers: 3, Ops: 6,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range []string{SQLite, Postgres, MySQL} {
				cs = append(cs,
					Case{Variant: "every scheduler runs it", Kind: Broken, Engine: en, run: cron("none")},
					Case{Variant: "lock while running", Kind: Broken, Engine: en, run: cron("lock")},
					Case{Variant: "lock + per-slot marker", Kind: Fixed, Engine: en, run: cron("marker")},
				)
			}
			return cs
		},
	}
}

// cronLockEngine is the lock engine cron uses beside a database engine.
func cronLockEngine(db string) string {
	if db == Postgres {
		return Postgres
	}
	return Memlock
}

func cron(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "runs", "CREATE TABLE {runs} ("+d.autoID()+", slot BIGINT NOT NULL, scheduler BIGINT NOT NULL)"); err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "marks", "CREATE TABLE {marks} (job VARCHAR(64) NOT NULL, slot BIGINT NOT NULL, PRIMARY KEY (job, slot))"); err != nil {
			return 0, "", err
		}
		l, err := rc.locker(ctx, cronLockEngine(rc.engineOf()), 0, 0)
		if err != nil {
			return 0, "", err
		}
		marks := d.table("marks")
		jobTime := cronPeriod / 4
		// Schedulers start on a common wall-clock origin, each reading it
		// through its own skewed clock.
		origin := time.Now().Add(cronPeriod)
		var runs atomic.Int64
		runJob := func(ctx context.Context, w, slot int) error {
			time.Sleep(jobTime)
			runs.Add(1)
			return d.exec(ctx, "INSERT INTO {runs} (slot, scheduler) VALUES (?, ?)", slot, w)
		}
		var wg sync.WaitGroup
		errs := make([]error, rc.workers)
		for w := range rc.workers {
			skew := cronSkews[w%len(cronSkews)]
			wg.Go(func() {
				for slot := 0; slot < rc.ops && !rc.expired(); slot++ {
					// The scheduler fires when its own clock (real + skew)
					// reaches the slot's time.
					fire := origin.Add(time.Duration(slot)*cronPeriod - skew)
					time.Sleep(time.Until(fire))
					err := rc.stats.do(func(o *op) error {
						switch impl {
						case "none":
							o.attempt()
							return runJob(ctx, w, slot)
						case "lock", "marker":
							le, err := l.TryAcquire(ctx, rc.key("job"))
							if errors.Is(err, lock.ErrNotAcquired) {
								return nil // another scheduler is running it
							}
							if err != nil {
								return err
							}
							defer le.Release(context.WithoutCancel(ctx))
							o.attempt()
							if impl == "marker" {
								var id string
								created, err := sqlcc.CreateOrGet(ctx, d.db, sqlcc.Row{
									Table: marks, Unique: []string{"job", "slot"},
									Values:    []sqlcc.Assignment{sqlcc.Set("job", "nightly"), sqlcc.Set("slot", slot)},
									Returning: []string{"job"},
								}, &id)
								if err != nil || !created {
									return err // this slot already ran
								}
							}
							return runJob(ctx, w, slot)
						}
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
		err = errors.Join(errs...)
		total, rerr := d.int(ctx, "SELECT COUNT(*) FROM {runs}")
		slots, rerr2 := d.int(ctx, "SELECT COUNT(DISTINCT slot) FROM {runs}")
		err = errors.Join(err, rerr, rerr2)
		return total - slots, fmt.Sprintf("%d schedulers with clocks off by %v, job every %v taking %v: %d runs for %d slots", rc.workers, cronSkews[:min(rc.workers, len(cronSkews))], cronPeriod, jobTime, total, slots), err
	}
}
