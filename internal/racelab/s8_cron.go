package racelab

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haita/haita/singleton"
)

// cronPeriod is the simulated schedule: a job every cronPeriod.
const cronPeriod = 100 * time.Millisecond

// cronSkews are the clock offsets of the schedulers (worker w gets
// cronSkews[w % len]): the later ones fire after the first one's job ended.
// All stay under cronPeriod/2, so every scheduler's clock rounds to the same
// slot (singleton.Slot).
var cronSkews = []time.Duration{0, 45 * time.Millisecond, -40 * time.Millisecond, 20 * time.Millisecond}

// cronScenario is S17: a cron job configured on several schedulers whose
// clocks disagree; the invariant is exactly one run per slot. With no
// coordination every scheduler runs it. singleton.Run holds a lease only
// while the job runs ("no overlap"): a scheduler whose clock is behind fires
// after the first run ended, finds the lease free and runs the same slot
// again. singleton.RunSlot claims a durable marker per (job, slot) under the
// lease, so a late scheduler finds the slot done.
//
// The markers live in the case's database; the lease comes from the
// engine's Locker where it has one (pglock, mysqllock, redislock, etcdlock; Redis and
// etcd keep the markers in SQLite) and from memlock otherwise, which is
// enough because the schedulers are goroutines of one process.
func cronScenario() *Scenario {
	return &Scenario{
		ID: 8, Name: "cron", Title: "A cron job on several schedulers with skewed clocks",
		Seeds: "S17", Unit: "double or missed runs", Workers: 3, Ops: 6,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range []string{SQLite, Postgres, MySQL, Redis, Etcd} {
				if isDB(en) {
					cs = append(cs, Case{Variant: "every scheduler runs it", Kind: Broken, Engine: en, run: cron("none")})
				}
				cs = append(cs,
					Case{Variant: "singleton.Run (no overlap only)", Kind: Broken, Engine: en, run: cron("run")},
					Case{Variant: "singleton.RunSlot + SQL markers", Kind: Fixed, Engine: en, run: cron("slot")},
				)
			}
			return cs
		},
	}
}

// cronEngines returns the database (runs and markers) and the lock engine
// a cron case on engine uses.
func cronEngines(engine string) (db, locker string) {
	switch engine {
	case Postgres, MySQL:
		return engine, engine
	case Redis, Etcd:
		return SQLite, engine
	}
	return engine, Memlock
}

// cron runs rc.ops slots of the job "nightly" on rc.workers schedulers. impl
// is "none" (run it unconditionally), "run" (singleton.Run in Skip mode, as
// gocron's distributed Locker does) or "slot" (singleton.RunSlot in Wait
// mode: a scheduler that fires while another runs the slot waits for the
// outcome instead of assuming it).
func cron(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		dbEngine, lockEngine := cronEngines(rc.engineOf())
		d, err := rc.db(ctx, dbEngine)
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "runs", "CREATE TABLE {runs} ("+d.autoID()+", slot BIGINT NOT NULL, scheduler BIGINT NOT NULL)"); err != nil {
			return 0, "", err
		}
		runners := make([]*singleton.Runner, rc.workers)
		how := "no coordination"
		if impl != "none" {
			l, err := rc.locker(ctx, lockEngine, 0, 0)
			if err != nil {
				return 0, "", err
			}
			opts := singleton.Options{KeyPrefix: rc.key("singleton") + "/"}
			how = "singleton.Run on " + lockBackendName(lockEngine)
			if impl == "slot" {
				ddl, err := singleton.MarkerSchema(d.dialect, d.name("marks"))
				if err != nil {
					return 0, "", err
				}
				if err := rc.create(ctx, d, "marks", ddl); err != nil {
					return 0, "", err
				}
				mk, err := singleton.NewSQLMarkers(d.db, singleton.MarkerOptions{Table: d.name("marks"), Dialect: d.dialect})
				if err != nil {
					return 0, "", err
				}
				opts.Markers, opts.Mode = mk, singleton.Wait
				how = fmt.Sprintf("singleton.RunSlot on %s, markers in %s", lockBackendName(lockEngine), dbEngine)
			}
			for w := range runners {
				opts.Holder = fmt.Sprintf("scheduler-%d", w)
				if runners[w], err = singleton.New(l, opts); err != nil {
					return 0, "", err
				}
			}
		}
		jobTime := cronPeriod / 4
		// Schedulers start on a common wall-clock origin on a slot boundary,
		// each reading it through its own skewed clock.
		origin := time.Now().Truncate(cronPeriod).Add(2 * cronPeriod)
		var wg sync.WaitGroup
		errs := make([]error, rc.workers)
		fired := make([]int64, rc.workers)
		for w := range rc.workers {
			skew := cronSkews[w%len(cronSkews)]
			wg.Go(func() {
				for slot := 0; slot < rc.ops && !rc.expired(); slot++ {
					// The scheduler fires when its own clock (real + skew)
					// reaches the slot's time, and names the slot by that
					// scheduled time on its clock, as a real scheduler does
					// (and singleton.Slot asks for): not by the time it woke
					// up, which on a loaded machine, or after waiting for the
					// previous slot's run, can lie past the next slot's
					// midpoint and name the next slot.
					fire := origin.Add(time.Duration(slot)*cronPeriod - skew)
					time.Sleep(time.Until(fire))
					clock := fire.Add(skew)
					fired[w] = int64(slot + 1)
					err := rc.stats.do(func(o *op) error {
						job := func(ctx context.Context) error {
							o.attempt()
							time.Sleep(jobTime)
							return d.exec(ctx, "INSERT INTO {runs} (slot, scheduler) VALUES (?, ?)", slot, w)
						}
						var err error
						switch impl {
						case "none":
							err = job(ctx)
						case "run":
							err = runners[w].Run(ctx, "nightly", job)
						case "slot":
							err = runners[w].RunSlot(ctx, "nightly", singleton.Slot(clock, cronPeriod), job)
						}
						if errors.Is(err, singleton.ErrRunning) || errors.Is(err, singleton.ErrDone) {
							return nil // another scheduler runs or ran it
						}
						return err
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
		// Every slot any scheduler reached should have run once.
		var reached int64
		for _, n := range fired {
			reached = max(reached, n)
		}
		missed := max(reached-slots, 0)
		detail := fmt.Sprintf("%d schedulers with clocks off by %v, job every %v taking %v, %s: %d runs for %d slots, %d missed",
			rc.workers, cronSkews[:min(rc.workers, len(cronSkews))], cronPeriod, jobTime, how, total, reached, missed)
		return total - slots + missed, detail, err
	}
}
