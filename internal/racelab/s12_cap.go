package racelab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
)

// capLimit is the concurrency cap of scenario 12.
const capLimit = 2

// capScenario caps how many processes work at once ("at most 2 exports
// across the cluster"). Broken: a semaphore in each process, which caps
// each process and not the cluster; and the naive shared counter (Redis
// INCR/DECR, or the same in a file under flock), which caps correctly
// until a holder dies holding a permit: its permit never comes back and
// the cap shrinks for good. Fixed: haita's semaphores, whose permits are
// leases that come back when their holder dies. In every case worker 0
// dies holding a permit on its last operation.
func capScenario() *Scenario {
	return &Scenario{
		ID: 12, Name: "cap", Title: "Concurrency cap across processes: at most 2 at once",
		Seeds: "S8 S9 S15 S18", Unit: "holders over the cap, or permits leaked", Workers: 4, Ops: 20,
		cases: func(e *env) []Case {
			cs := []Case{
				{Variant: "in-process semaphore per process", Kind: Broken, Engine: Memlock, Processes: true, run: capCase(Memlock)},
				{Variant: "naive counter (INCR/DECR in a file)", Kind: Broken, Engine: File, Processes: true, run: capCase(File)},
			}
			if e.cfg.Redis != "" || containsEngine(e.cfg.Engines, Redis) {
				cs = append(cs, Case{Variant: "naive Redis INCR/DECR", Kind: Broken, Engine: Redis, Processes: true, run: capCase("naive-redis")})
			}
			for _, en := range []string{Filelock, Redis, Postgres} {
				cs = append(cs, Case{Variant: lockBackendName(en) + " semaphore", Kind: Fixed, Engine: en, Processes: true, run: capCase(en)})
			}
			return cs
		},
	}
}

func containsEngine(list []string, e string) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}

// capTTL is the permits' TTL on engines with one: a dead holder's permit
// comes back after it.
const capTTL = time.Second

// capCase runs worker processes that each hold a permit for the race
// window per operation, counting holders in a gauge file (under flock, so
// the count itself is exact). Afterwards it checks that every permit can be
// taken again: a leaked permit is a violation.
func capCase(engine string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		gauge := filepath.Join(rc.env.dir, fmt.Sprintf("cap-%d", rc.index))
		if err := os.WriteFile(gauge, []byte(gaugeRecord(0, 0)), 0o600); err != nil {
			return 0, "", err
		}
		s := rc.env.lockSpec(engine)
		s.TTL = capTTL
		args := append([]string{"--file", gauge, "--ops", strconv.Itoa(rc.ops), "--window", rc.window.String(),
			"--key", rc.key("cap")}, s.args()...)
		err := rc.procs(ctx, "cap", args)
		_, over, gerr := readGauge(gauge)
		if err == nil {
			err = gerr
		}
		leaked, lerr := capLeaked(ctx, s, gauge, rc.key("cap"))
		if err == nil {
			err = lerr
		}
		return over + leaked, fmt.Sprintf("cap %d: %d grants over the cap, %d of %d permits leaked after a holder died",
			capLimit, over, leaked, capLimit), err
	}
}

// gaugeRecord is the gauge file: holders now and grants over the cap.
func gaugeRecord(now, over int64) string { return fmt.Sprintf("%20d %20d\n", now, over) }

func readGauge(path string) (now, over int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	_, err = fmt.Sscan(string(b), &now, &over)
	return now, over, err
}

// addGauge adds d to the holders under an exclusive flock and counts a
// grant over the cap.
func addGauge(f *os.File, d int64) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	buf := make([]byte, 42)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return err
	}
	var now, over int64
	if _, err := fmt.Sscan(string(buf), &now, &over); err != nil {
		return err
	}
	now += d
	if d > 0 && now > capLimit {
		over++
	}
	_, err := f.WriteAt([]byte(gaugeRecord(now, over)), 0)
	return err
}

// capSem is a semaphore as the cap scenario uses it: acquire, and a
// release that returns nothing.
type capSem func(ctx context.Context) (release func() error, err error)

// openCapSem opens the semaphore of s.Engine ("file" and "naive-redis"
// are the naive counters) on key.
func openCapSem(ctx context.Context, s lockSpec, file, key string) (capSem, func(), error) {
	var sem *lock.Semaphore
	var closeFn func()
	var err error
	opts := lock.Options{TTL: s.TTL, WaitLimit: time.Minute}
	switch s.Engine {
	case File:
		path := file + ".naive"
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, err
		}
		return naiveFileSem(f), func() { f.Close() }, nil
	case "naive-redis":
		c := redis.NewClient(&redis.Options{Addr: s.Redis})
		return naiveRedisSem(c, key), func() { c.Close() }, nil
	case Memlock:
		sem, err = memlock.NewSemaphore(lock.Options{}, capLimit)
		closeFn = func() {}
	case Filelock:
		sem, err = filelock.NewSemaphore(s.Dir, lock.Options{WaitLimit: time.Minute}, capLimit)
		closeFn = func() {}
	case Redis:
		c := redis.NewClient(&redis.Options{Addr: s.Redis})
		sem, err = redislock.NewSemaphore(c, opts, capLimit)
		closeFn = func() { c.Close() }
	case Postgres:
		pool, perr := pgxpool.New(ctx, s.Postgres)
		if perr != nil {
			return nil, nil, perr
		}
		if err = pglock.CreateSemaphoreTables(ctx, pool, pglock.DefaultTable); err == nil {
			sem, err = pglock.NewSemaphore(pool, opts, capLimit)
		}
		closeFn = pool.Close
	default:
		return nil, nil, fmt.Errorf("racelab: no semaphore on %s", s.Engine)
	}
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	acquire := func(ctx context.Context) (func() error, error) {
		le, err := sem.Acquire(ctx, key)
		if err != nil {
			return nil, err
		}
		return func() error { return le.Release(context.WithoutCancel(ctx)) }, nil
	}
	return acquire, func() { sem.Close(); closeFn() }, nil
}

// naiveFileSem is INCR/DECR on a counter in a file, each step atomic under
// flock, as Redis makes INCR atomic: correct until a holder dies.
func naiveFileSem(f *os.File) capSem {
	add := func(d int64) (int64, error) {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			return 0, err
		}
		defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
		buf := make([]byte, 21)
		n, _ := f.ReadAt(buf, 0)
		v, _ := strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
		v += d
		_, err := f.WriteAt([]byte(counterRecord(v)), 0)
		return v, err
	}
	return func(ctx context.Context) (func() error, error) {
		for {
			n, err := add(1)
			if err != nil {
				return nil, err
			}
			if n <= capLimit {
				return func() error { _, err := add(-1); return err }, nil
			}
			if _, err := add(-1); err != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// naiveRedisSem is the naive Redis counter: INCR, DECR back when over the
// cap, DECR to release.
func naiveRedisSem(c *redis.Client, key string) capSem {
	return func(ctx context.Context) (func() error, error) {
		for {
			n, err := c.Incr(ctx, key).Result()
			if err != nil {
				return nil, err
			}
			if n <= capLimit {
				return func() error { return c.Decr(context.WithoutCancel(ctx), key).Err() }, nil
			}
			if err := c.Decr(ctx, key).Err(); err != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// capLeaked counts the permits that cannot be taken again after every
// worker ended (waiting up to three TTLs for the dead holder's lease).
func capLeaked(ctx context.Context, s lockSpec, file, key string) (int64, error) {
	if s.Engine == Memlock {
		return 0, nil // per process: nothing outlives the workers
	}
	sem, closeFn, err := openCapSem(ctx, s, file, key)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	var leaked int64
	var releases []func() error
	for range capLimit {
		wctx, cancel := context.WithTimeout(ctx, 3*capTTL)
		release, err := sem(wctx)
		cancel()
		if err != nil {
			leaked++
			continue
		}
		releases = append(releases, release)
	}
	for _, r := range releases {
		_ = r()
	}
	return leaked, nil
}

// capWorker is the process side of capCase.
func capWorker(ctx context.Context, w *worker) error {
	sem, closeFn, err := openCapSem(ctx, w.spec, w.file, w.key)
	if err != nil {
		return err
	}
	defer closeFn()
	f, err := os.OpenFile(w.file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := w.ready(); err != nil {
		return err
	}
	for i := range w.ops {
		err := w.stats.do(func(o *op) error {
			release, err := sem(ctx)
			if err != nil {
				return err
			}
			o.attempt()
			if err := addGauge(f, 1); err != nil {
				return err
			}
			time.Sleep(w.window)
			if err := addGauge(f, -1); err != nil {
				return err
			}
			if w.id == 0 && i == w.ops-1 {
				return nil // dies holding the permit: no release
			}
			return release()
		})
		if err != nil {
			return err
		}
	}
	return nil
}
