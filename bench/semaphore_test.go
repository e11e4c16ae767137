package bench

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/lock/redislock"
)

// The semaphore and reader-writer benchmarks compare, in the same run:
// haita's in-process semaphore against golang.org/x/sync/semaphore's
// weighted semaphore and a buffered channel; haita's Redis semaphore against
// the naive INCR/DECR counter and against haita's own Redis mutex; and
// haita's reader-writer lock against its mutex at 90 % reads.
//
//	cd bench && for i in 1 2 3 4 5; do go test -run '^$' -bench 'Semaphore|RWLock' -benchtime 1s -count 1 .; done

// permits is the limit of the semaphore benchmarks.
const permits = 4

// sem is one semaphore implementation, reduced to what the benchmarks do.
type sem func(ctx context.Context) (release func(), err error)

func semPeers(b *testing.B) (names []string, m map[string]sem) {
	hs, err := memlock.NewSemaphore(lock.Options{}, permits)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = hs.Close() })
	xs := semaphore.NewWeighted(permits)
	ch := make(chan struct{}, permits)
	m = map[string]sem{
		"haita-memlock": func(ctx context.Context) (func(), error) {
			le, err := hs.Acquire(ctx, "k")
			if err != nil {
				return nil, err
			}
			return func() { _ = le.Release(ctx) }, nil
		},
		"x-sync-semaphore": func(ctx context.Context) (func(), error) {
			if err := xs.Acquire(ctx, 1); err != nil {
				return nil, err
			}
			return func() { xs.Release(1) }, nil
		},
		"chan": func(ctx context.Context) (func(), error) {
			select {
			case ch <- struct{}{}:
				return func() { <-ch }, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
	return []string{"haita-memlock", "x-sync-semaphore", "chan"}, m
}

// BenchmarkSemaphoreInProcess: acquire and release one permit of 4 on one
// key, from one goroutine and from 8.
func BenchmarkSemaphoreInProcess(b *testing.B) {
	names, m := semPeers(b)
	for _, name := range names {
		s := m[name]
		for _, g := range []int{1, 8} {
			b.Run("lib="+name+"/g="+strconv.Itoa(g), func(b *testing.B) {
				ctx := context.Background()
				b.SetParallelism(max(1, g/runtime.GOMAXPROCS(0)))
				if g == 1 {
					for b.Loop() {
						release, err := s(ctx)
						if err != nil {
							b.Fatal(err)
						}
						release()
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						release, err := s(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						release()
					}
				})
			})
		}
	}
}

// naiveIncr is the naive Redis counter semaphore: INCR, and DECR again when
// over the limit; DECR to release. A holder that dies never gives its
// permit back.
func naiveIncr(c *redis.Client, key string) sem {
	return func(ctx context.Context) (func(), error) {
		for {
			n, err := c.Incr(ctx, key).Result()
			if err != nil {
				return nil, err
			}
			if n <= permits {
				return func() { c.Decr(ctx, key) }, nil
			}
			if err := c.Decr(ctx, key).Err(); err != nil {
				return nil, err
			}
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}

// BenchmarkSemaphoreRedis: acquire and release one permit of 4 on one key,
// uncontended (one goroutine), with haita's Redis semaphore, the naive
// INCR/DECR counter, and haita's Redis mutex as the reference the target
// is stated against (a permit costs at most one round trip more).
func BenchmarkSemaphoreRedis(b *testing.B) {
	c := needRedis(b, 0)
	hs, err := redislock.NewSemaphore(c, lock.Options{TTL: benchTTL}, permits)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = hs.Close() })
	mu, err := redislock.New(c, lock.Options{TTL: benchTTL})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mu.Close() })
	libs := []struct {
		name string
		s    sem
	}{
		{"haita-semaphore", func(ctx context.Context) (func(), error) {
			le, err := hs.Acquire(ctx, "bench:sem")
			if err != nil {
				return nil, err
			}
			return func() { _ = le.Release(ctx) }, nil
		}},
		{"naive-incr-decr", naiveIncr(c, "bench:naive")},
		{"haita-mutex", func(ctx context.Context) (func(), error) {
			le, err := mu.Acquire(ctx, "bench:mutex")
			if err != nil {
				return nil, err
			}
			return func() { _ = le.Release(ctx) }, nil
		}},
	}
	for _, l := range libs {
		b.Run("lib="+l.name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				release, err := l.s(ctx)
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkRWLock: 8 goroutines on one key, 90 % reads; each holds its
// lease for 100µs (a read of storage while the key is held), so a lock that
// lets readers overlap reads more per second. Engines: memlock and Redis.
func BenchmarkRWLock(b *testing.B) {
	const hold = 100 * time.Microsecond
	engines := []struct {
		name string
		rw   func(b *testing.B) (*lock.RWLocker, lock.Locker)
	}{
		{"memlock", func(b *testing.B) (*lock.RWLocker, lock.Locker) {
			var root memlock.Locker
			rw, err := root.RWLocker(lock.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return rw, &root
		}},
		{"redis", func(b *testing.B) (*lock.RWLocker, lock.Locker) {
			c := needRedis(b, 0)
			rw, err := redislock.NewRWLocker(c, lock.Options{TTL: benchTTL})
			if err != nil {
				b.Fatal(err)
			}
			mu, err := redislock.New(c, lock.Options{TTL: benchTTL})
			if err != nil {
				b.Fatal(err)
			}
			return rw, mu
		}},
	}
	for _, e := range engines {
		for _, kind := range []string{"rwlock", "mutex"} {
			b.Run("engine="+e.name+"/lock="+kind+"/readers=8", func(b *testing.B) {
				rw, mu := e.rw(b)
				defer rw.Close()
				defer mu.Close()
				read, write := rw.AcquireRead, rw.AcquireWrite
				if kind == "mutex" {
					read, write = mu.Acquire, mu.Acquire
				}
				key := uniqueKey("rw:")
				var reads, n atomic.Int64
				b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						acquire := read
						isRead := n.Add(1)%10 != 0
						if !isRead {
							acquire = write
						}
						le, err := acquire(ctx, key)
						if err != nil {
							b.Error(err)
							return
						}
						time.Sleep(hold)
						if isRead {
							reads.Add(1)
						}
						_ = le.Release(ctx)
					}
				})
				b.ReportMetric(float64(reads.Load())/b.Elapsed().Seconds(), "reads/s")
			})
		}
	}
}
