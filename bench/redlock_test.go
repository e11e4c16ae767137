package bench

import (
	"context"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	rsredis "github.com/go-redsync/redsync/v4/redis"
	rsgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/lock/redlock"
)

// BenchmarkRedlock: uncontended acquire+release on unique keys over 1, 3
// and 5 independent instances, haita's lock/redlock beside redsync over the
// same instances, and haita's single-instance lock/redislock as the base.
// acquire-µs is the mean time of the acquire alone.
func BenchmarkRedlock(b *testing.B) {
	needRedis(b, redisInstances-1)
	clients := make([]*redis.Client, redisInstances)
	for i := range clients {
		clients[i] = needRedis(b, i)
	}
	single, err := redislock.New(clients[0], lock.Options{TTL: benchTTL})
	if err != nil {
		b.Fatal(err)
	}
	defer single.Close()
	b.Run("lib=haita-redislock/n=1", func(b *testing.B) { benchLocker(b, single) })
	for _, n := range []int{1, 3, 5} {
		scripters := make([]redis.Scripter, n)
		pools := make([]rsredis.Pool, n)
		for i := range n {
			scripters[i] = clients[i]
			pools[i] = rsgoredis.NewPool(clients[i])
		}
		// A prefix of its own per n: instance 0 also serves the other
		// benchmarks, whose fencing counters would otherwise run ahead of the
		// other instances' and force a write-back round on every acquire.
		l, err := redlock.New(scripters, lock.Options{TTL: benchTTL}, redlock.WithPrefix("rl"+itoa(n)+":"))
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		rs := redsync.New(pools...)
		b.Run("lib=haita/n="+itoa(n), func(b *testing.B) { benchLocker(b, l) })
		b.Run("lib=redsync/n="+itoa(n), func(b *testing.B) {
			ctx := context.Background()
			var acq time.Duration
			for b.Loop() {
				m := rs.NewMutex(uniqueKey("rl:"), redsync.WithExpiry(benchTTL))
				t0 := time.Now()
				if err := m.LockContext(ctx); err != nil {
					b.Fatal(err)
				}
				acq += time.Since(t0)
				if _, err := m.UnlockContext(ctx); err != nil {
					b.Fatal(err)
				}
			}
			reportAcquire(b, acq)
		})
	}
}

func benchLocker(b *testing.B, l lock.Locker) {
	ctx := context.Background()
	var acq time.Duration
	for b.Loop() {
		t0 := time.Now()
		le, err := l.Acquire(ctx, uniqueKey("rl:"))
		if err != nil {
			b.Fatal(err)
		}
		acq += time.Since(t0)
		if err := le.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	reportAcquire(b, acq)
}

func reportAcquire(b *testing.B, acq time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(acq)/float64(b.N)/float64(time.Microsecond), "acquire-µs")
}

func itoa(n int) string { return string(rune('0' + n)) }
