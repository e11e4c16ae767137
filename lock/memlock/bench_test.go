package memlock_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/lock/memlock"
)

// naive is the keyed lock people write first: a map of mutexes that is
// never cleaned up.
type naive struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (n *naive) lock(key string) *sync.Mutex {
	n.mu.Lock()
	m := n.m[key]
	if m == nil {
		m = new(sync.Mutex)
		n.m[key] = m
	}
	n.mu.Unlock()
	m.Lock()
	return m
}

func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=sync.Mutex", func(b *testing.B) {
		var mu sync.Mutex
		for b.Loop() {
			mu.Lock()
			mu.Unlock() //nolint:staticcheck // empty critical section on purpose
		}
	})
	b.Run("impl=naive-map", func(b *testing.B) {
		n := &naive{m: map[string]*sync.Mutex{}}
		for b.Loop() {
			n.lock("k").Unlock()
		}
	})
	b.Run("impl=memlock", func(b *testing.B) {
		var l memlock.Locker
		b.ReportAllocs()
		for b.Loop() {
			le, err := l.Acquire(ctx, "k")
			if err != nil {
				b.Fatal(err)
			}
			_ = le.Release(ctx)
		}
	})
}

func BenchmarkManyKeysParallel(b *testing.B) {
	ctx := context.Background()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user/" + strconv.Itoa(i)
	}
	b.Run("impl=naive-map", func(b *testing.B) {
		n := &naive{m: map[string]*sync.Mutex{}}
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)) * 97
			for pb.Next() {
				i++
				n.lock(keys[i%len(keys)]).Unlock()
			}
		})
	})
	b.Run("impl=memlock", func(b *testing.B) {
		var l memlock.Locker
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)) * 97
			for pb.Next() {
				i++
				le, err := l.Acquire(ctx, keys[i%len(keys)])
				if err != nil {
					b.Error(err)
					return
				}
				_ = le.Release(ctx)
			}
		})
	})
}

// BenchmarkHotKey has 8 goroutines take turns on one key, holding it for a
// short critical section, and reports handoffs per second and the wait
// percentiles.
func BenchmarkHotKey(b *testing.B) {
	ctx := context.Background()
	const workers = 8
	run := func(b *testing.B, acquire func() func()) {
		var mu sync.Mutex
		var waits []time.Duration
		var wg sync.WaitGroup
		per := max(b.N/workers, 1)
		b.ResetTimer()
		start := time.Now()
		for range workers {
			wg.Go(func() {
				local := make([]time.Duration, 0, per)
				for range per {
					t0 := time.Now()
					release := acquire()
					local = append(local, time.Since(t0))
					spin(200) // a short critical section
					release()
				}
				mu.Lock()
				waits = append(waits, local...)
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		slices.Sort(waits)
		b.ReportMetric(float64(len(waits))/elapsed.Seconds(), "handoffs/s")
		b.ReportMetric(float64(waits[len(waits)/2].Nanoseconds())/1e3, "p50-wait-µs")
		b.ReportMetric(float64(waits[len(waits)*99/100].Nanoseconds())/1e3, "p99-wait-µs")
		b.ReportMetric(float64(waits[len(waits)-1].Nanoseconds())/1e3, "max-wait-µs")
	}
	b.Run("impl=sync.Mutex", func(b *testing.B) {
		var mu sync.Mutex
		run(b, func() func() { mu.Lock(); return mu.Unlock })
	})
	b.Run("impl=naive-map", func(b *testing.B) {
		n := &naive{m: map[string]*sync.Mutex{}}
		run(b, func() func() { return n.lock("hot").Unlock })
	})
	b.Run("impl=memlock", func(b *testing.B) {
		var l memlock.Locker
		run(b, func() func() {
			le, err := l.Acquire(ctx, "hot")
			if err != nil {
				panic(err)
			}
			return func() { _ = le.Release(ctx) }
		})
	})
}

var sink atomic.Uint64

func spin(n int) {
	x := uint64(1)
	for i := range n {
		x = x*31 + uint64(i)
	}
	sink.Add(x)
}
