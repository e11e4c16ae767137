package bench

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	rsgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
)

// The Redis benchmarks compare, against the same redis-server in the same
// run: haita's lock/redislock, redsync, bsm/redislock and the raw floor of
// two commands (SET NX PX, and an EVALSHA compare-and-delete).
//
//	cd bench && for i in 1 2 3 4 5 6; do go test -run '^$' -bench 'Redis|Redlock' -count 1 .; done

const benchTTL = 30 * time.Second

// releaseLua is the compare-and-delete every Redis lock client releases with.
var releaseLua = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// mutex is one library's lock, reduced to what the benchmarks do with it.
type mutex interface {
	lock(ctx context.Context, key string) (unlock func(context.Context) error, err error)
}

type mutexFunc func(ctx context.Context, key string) (func(context.Context) error, error)

func (f mutexFunc) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	return f(ctx, key)
}

// peers returns the contenders on client c, by name. Retry settings: each
// peer's defaults and its tightest sensible setting (1ms).
func peers(tb testing.TB, c *redis.Client) (names []string, m map[string]mutex) {
	l, err := redislock.New(c, lock.Options{TTL: benchTTL})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	rs := redsync.New(rsgoredis.NewPool(c))
	bl := bsm.New(c)
	var seq atomic.Uint64
	m = map[string]mutex{
		"raw": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			owner := strconv.FormatUint(seq.Add(1), 10)
			for {
				ok, err := c.SetNX(ctx, key, owner, benchTTL).Result()
				if err != nil {
					return nil, err
				}
				if ok {
					break
				}
				time.Sleep(time.Millisecond)
			}
			return func(ctx context.Context) error { return releaseLua.Run(ctx, c, []string{key}, owner).Err() }, nil
		}),
		"haita": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			le, err := l.Acquire(ctx, key)
			if err != nil {
				return nil, err
			}
			return le.Release, nil
		}),
		"redsync": redsyncMutex(rs, redsync.WithExpiry(benchTTL)),
		"redsync-1ms": redsyncMutex(rs, redsync.WithExpiry(benchTTL),
			redsync.WithRetryDelay(time.Millisecond), redsync.WithTries(1<<30)),
		"bsm-100ms": bsmMutex(bl, bsm.LinearBackoff(100*time.Millisecond)),
		"bsm-1ms":   bsmMutex(bl, bsm.LinearBackoff(time.Millisecond)),
	}
	return []string{"raw", "haita", "redsync", "redsync-1ms", "bsm-100ms", "bsm-1ms"}, m
}

// redsyncMutex locks with redsync; when its tries run out it starts over,
// so that a wait is never cut short.
func redsyncMutex(rs *redsync.Redsync, opts ...redsync.Option) mutex {
	return mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
		m := rs.NewMutex(key, opts...)
		for {
			err := m.LockContext(ctx)
			if err == nil {
				break
			}
			if !errors.Is(err, redsync.ErrFailed) {
				return nil, err
			}
		}
		return func(ctx context.Context) error { _, err := m.UnlockContext(ctx); return err }, nil
	})
}

// bsmMutex locks with bsm/redislock. Its default is not to retry at all,
// so the benchmarks give it the linear backoff of its documentation
// (100ms) and 1ms; it gives up at the TTL, and then starts over.
func bsmMutex(bl *bsm.Client, retry bsm.RetryStrategy) mutex {
	return mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
		for {
			lk, err := bl.Obtain(ctx, key, benchTTL, &bsm.Options{RetryStrategy: retry})
			if err == nil {
				return lk.Release, nil
			}
			if !errors.Is(err, bsm.ErrNotObtained) {
				return nil, err
			}
		}
	})
}

var keySeq atomic.Uint64

func uniqueKey(prefix string) string {
	return prefix + strconv.FormatUint(keySeq.Add(1), 10)
}

// BenchmarkRedisUncontended: acquire and release a key nobody else wants.
func BenchmarkRedisUncontended(b *testing.B) {
	c := needRedis(b, 0)
	names, m := peers(b, c)
	for _, name := range names {
		if name == "redsync-1ms" || name == "bsm-100ms" {
			continue // retry settings do not matter without contention
		}
		mu := m[name]
		b.Run("lib="+name+"/g=1", func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				unlock, err := mu.lock(ctx, uniqueKey("u:"))
				if err != nil {
					b.Fatal(err)
				}
				if err := unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run("lib="+name+"/g=parallel", func(b *testing.B) {
			ctx := context.Background()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					unlock, err := mu.lock(ctx, uniqueKey("up:"))
					if err != nil {
						b.Error(err)
						return
					}
					if err := unlock(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkRedisPairedUncontended interleaves, in every iteration, one
// uncontended acquire+release (a fresh key) of each contender on the same
// server: haita, bsm/redislock, redsync and the raw SET NX + EVALSHA
// floor. Contenders run one after the other see different moments of a
// shared machine; interleaved ones share them, so the ratios reported here
// (haita / bsm, haita / raw) are the ones to compare. Reports each
// contender's ops/s over the time it spent.
func BenchmarkRedisPairedUncontended(b *testing.B) {
	c := needRedis(b, 0)
	_, m := peers(b, c)
	names := []string{"raw", "haita", "bsm", "redsync"}
	mus := []mutex{m["raw"], m["haita"], m["bsm-1ms"], m["redsync"]}
	ctx := context.Background()
	spent := make([]time.Duration, len(mus))
	for b.Loop() {
		for i, mu := range mus {
			key := uniqueKey("pu:")
			t0 := time.Now()
			unlock, err := mu.lock(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			if err := unlock(ctx); err != nil {
				b.Fatal(err)
			}
			spent[i] += time.Since(t0)
		}
	}
	opsPerSec := func(i int) float64 { return float64(b.N) / spent[i].Seconds() }
	for i, name := range names {
		b.ReportMetric(opsPerSec(i), name+"-ops/s")
	}
	b.ReportMetric(opsPerSec(1)/opsPerSec(2), "haita/bsm")
	b.ReportMetric(opsPerSec(1)/opsPerSec(0), "haita/raw")
}

// hotKeyResult is one hot-key run: every wait, and each goroutine's count.
type hotKeyResult struct {
	waits   []time.Duration
	shares  []int
	elapsed time.Duration
}

// runHotKey has workers goroutines take key n times in all, each releasing
// at once and queueing again, and records how long every acquire waited.
func runHotKey(ctx context.Context, mu mutex, key string, workers, n int) (hotKeyResult, error) {
	var left atomic.Int64
	left.Store(int64(n))
	res := hotKeyResult{shares: make([]int, workers)}
	waits := make([][]time.Duration, workers)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for g := range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				t0 := time.Now()
				unlock, err := mu.lock(ctx, key)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				waits[g] = append(waits[g], time.Since(t0))
				res.shares[g]++
				if err := unlock(ctx); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, w := range waits {
		res.waits = append(res.waits, w...)
	}
	slices.Sort(res.waits)
	return res, firstErr
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// BenchmarkRedisHotKey: 8 goroutines on one key, each taking it again as
// soon as it let go. Reports handoffs/s, wait percentiles in µs and the
// smallest and largest goroutine share in percent.
func BenchmarkRedisHotKey(b *testing.B) {
	c := needRedis(b, 0)
	names, m := peers(b, c)
	const workers = 8
	for _, name := range names {
		if name == "raw" {
			continue
		}
		b.Run("lib="+name+"/g=8", func(b *testing.B) {
			// One run of b.N handoffs shared by the goroutines; b.N is
			// sized by the framework, b.Loop cannot drive 8 goroutines.
			res, err := runHotKey(context.Background(), m[name], uniqueKey("hot:"), workers, b.N)
			if err != nil {
				b.Fatal(err)
			}
			reportHotKey(b, res, b.N)
		})
	}
}

func reportHotKey(b *testing.B, res hotKeyResult, n int) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(float64(n)/res.elapsed.Seconds(), "handoffs/s")
	b.ReportMetric(us(quantile(res.waits, 0.5)), "p50-µs")
	b.ReportMetric(us(quantile(res.waits, 0.99)), "p99-µs")
	b.ReportMetric(us(quantile(res.waits, 0.999)), "p99.9-µs")
	b.ReportMetric(us(res.waits[len(res.waits)-1]), "max-µs")
	lo, hi := slices.Min(res.shares), slices.Max(res.shares)
	b.ReportMetric(100*float64(lo)/float64(n), "min-share-%")
	b.ReportMetric(100*float64(hi)/float64(n), "max-share-%")
}
