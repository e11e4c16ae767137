package singleton

import (
	"context"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/robfig/cron/v3"
)

// GocronOptions configure [Runner.GocronLocker].
type GocronOptions struct {
	// Every, when positive, makes each run claim the slot [Slot](now,
	// Every) in Options.Markers: the job runs at most once per slot across
	// nodes. Zero gives gocron's own semantics, no overlap only (a fast job
	// then runs on every node, one after the other). Set it to the job's
	// interval; clocks must agree to within Every/2.
	Every time.Duration
}

// GocronLocker returns a gocron v2 distributed Locker over r, for
// gocron.WithDistributedLocker or gocron.WithDistributedJobLocker. Lock
// takes the job's lease (job name = gocron's key: set gocron.WithName) in
// r's Mode and, with opts.Every, claims the slot; the returned Lock's
// Unlock records the slot done and releases the lease. An error from Lock
// makes gocron skip the run (RunningError, DoneError). gocron does not give
// the job the lease's context and does not tell the Locker whether the job
// failed: to stop on a lost lease or to record failures, call
// [Runner.RunSlot] inside the job instead. Safe for concurrent use.
func (r *Runner) GocronLocker(opts GocronOptions) gocron.Locker {
	return gocronLocker{r: r, every: opts.Every}
}

type gocronLocker struct {
	r     *Runner
	every time.Duration
}

var _ gocron.Locker = gocronLocker{}

func (g gocronLocker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	if err := check("job", key, 200); err != nil {
		return nil, err
	}
	slot := ""
	if g.every > 0 {
		if g.r.opts.Markers == nil {
			return nil, ErrNoMarkers
		}
		slot = Slot(g.r.opts.Now(), g.every)
	}
	ru, err := g.r.begin(ctx, key, slot)
	if err != nil {
		return nil, err
	}
	return &gocronLock{ru: ru}, nil
}

type gocronLock struct{ ru *execution }

func (l *gocronLock) Unlock(context.Context) error {
	var err error
	if lerr := l.ru.lease.Err(); lerr != nil {
		err = lerr
	}
	return l.ru.end(err)
}

// CronOptions configure [Runner.CronWrapper].
type CronOptions struct {
	// Every, when positive, runs each invocation as [Runner.RunSlot] with
	// slot [Slot](now, Every): at most once per slot across nodes. Zero:
	// [Runner.Run], no overlap only.
	Every time.Duration
	// OnError receives every error, including skips (match ErrRunning and
	// ErrDone with errors.Is). Nil drops them.
	OnError func(error)
}

// CronWrapper returns a robfig/cron v3 JobWrapper that runs the wrapped job
// as job through r: wrap one job with it, cron.NewChain(w).Then(j), since
// job names the lock key and the slot marker. The
// job's Run has no context, so it cannot be stopped on a lost lease;
// prefer calling [Runner.RunSlot] from a cron.FuncJob when it must.
func (r *Runner) CronWrapper(job string, opts CronOptions) cron.JobWrapper {
	return func(j cron.Job) cron.Job {
		return cron.FuncJob(func() {
			fn := func(context.Context) error { j.Run(); return nil }
			var err error
			if opts.Every > 0 {
				err = r.RunSlot(context.Background(), job, Slot(r.opts.Now(), opts.Every), fn)
			} else {
				err = r.Run(context.Background(), job, fn)
			}
			if err != nil && opts.OnError != nil {
				opts.OnError(err)
			}
		})
	}
}
