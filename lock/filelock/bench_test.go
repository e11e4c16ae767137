package filelock_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haita/haita/lock"
)

// rawFile opens a file for the raw flock reference.
func rawFile(b *testing.B, path string) int {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

func rawLock(b *testing.B, fd int) {
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		b.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_UN); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUncontended: Acquire+Release of one key by one goroutine, beside
// flock(LOCK_EX)+flock(LOCK_UN) on a descriptor kept open.
func BenchmarkUncontended(b *testing.B) {
	b.Run("impl=filelock", func(b *testing.B) {
		l := newLocker(b, b.TempDir(), lock.Options{})
		ctx := context.Background()
		for b.Loop() {
			le, err := l.Acquire(ctx, "k")
			if err != nil {
				b.Fatal(err)
			}
			if err := le.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=raw-flock", func(b *testing.B) {
		fd := rawFile(b, filepath.Join(b.TempDir(), "k"))
		for b.Loop() {
			rawLock(b, fd)
		}
	})
}

// BenchmarkParallelKeys: every goroutine of RunParallel (GOMAXPROCS of
// them) takes and releases its own key.
func BenchmarkParallelKeys(b *testing.B) {
	b.Run("impl=filelock", func(b *testing.B) {
		l := newLocker(b, b.TempDir(), lock.Options{})
		ctx := context.Background()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			key := fmt.Sprintf("k%d", n.Add(1))
			for pb.Next() {
				le, err := l.Acquire(ctx, key)
				if err != nil {
					b.Error(err)
					return
				}
				if err := le.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("impl=raw-flock", func(b *testing.B) {
		dir := b.TempDir()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			fd, err := unix.Open(filepath.Join(dir, fmt.Sprint(n.Add(1))), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
			if err != nil {
				b.Error(err)
				return
			}
			defer unix.Close(fd)
			for pb.Next() {
				unix.Flock(fd, unix.LOCK_EX)
				unix.Flock(fd, unix.LOCK_UN)
			}
		})
	})
}

// BenchmarkHotKey: 8 goroutines take turns on one key, each holding it for
// a moment; it reports handoffs/s and the wait percentiles. The reference
// gives each goroutine its own descriptor of one file and blocks in
// flock(LOCK_EX), the kernel's own queue.
func BenchmarkHotKey(b *testing.B) {
	const goroutines = 8
	run := func(b *testing.B, lockFn func(g int) func()) {
		var (
			mu    sync.Mutex
			waits []time.Duration
			next  atomic.Int64
			wg    sync.WaitGroup
		)
		start := time.Now()
		total := int64(b.N)
		for g := range goroutines {
			wg.Go(func() {
				var mine []time.Duration
				for next.Add(1) <= total {
					t0 := time.Now()
					unlock := lockFn(g)
					mine = append(mine, time.Since(t0))
					unlock()
				}
				mu.Lock()
				waits = append(waits, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(waits)
		pct := func(p float64) float64 {
			if len(waits) == 0 {
				return 0
			}
			return float64(waits[int(p*float64(len(waits)-1))].Nanoseconds())
		}
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "handoffs/s")
		b.ReportMetric(pct(0.50), "p50-wait-ns")
		b.ReportMetric(pct(0.99), "p99-wait-ns")
		b.ReportMetric(pct(1), "max-wait-ns")
	}
	b.Run(fmt.Sprintf("impl=filelock/goroutines=%d", goroutines), func(b *testing.B) {
		l := newLocker(b, b.TempDir(), lock.Options{})
		ctx := context.Background()
		run(b, func(int) func() {
			le, err := l.Acquire(ctx, "hot")
			if err != nil {
				b.Error(err)
				return func() {}
			}
			return func() { _ = le.Release(ctx) }
		})
	})
	b.Run(fmt.Sprintf("impl=raw-flock/goroutines=%d", goroutines), func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "hot")
		fds := make([]int, goroutines)
		for i := range fds {
			fds[i] = rawFile(b, path)
		}
		run(b, func(g int) func() {
			unix.Flock(fds[g], unix.LOCK_EX)
			return func() { unix.Flock(fds[g], unix.LOCK_UN) }
		})
	})
}
