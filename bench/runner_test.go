package bench

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// benchUncontended runs, for each of names, one goroutine that acquires and
// releases one key nobody else wants (prefix and a unique suffix) again and
// again, and reports ops/s.
func benchUncontended(b *testing.B, names []string, m map[string]mutex, prefix string) {
	ctx := context.Background()
	for _, name := range names {
		mu := m[name]
		key := uniqueKey(prefix)
		b.Run("lib="+name+"/g=1", func(b *testing.B) {
			for b.Loop() {
				unlock, err := mu.lock(ctx, key)
				if err != nil {
					b.Fatal(err)
				}
				if err := unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// benchHotKey runs, for each of names, workers goroutines on one key
// (prefix and a unique suffix), each taking it again as soon as it let go,
// and reports what runHotKey measured.
func benchHotKey(b *testing.B, names []string, m map[string]mutex, prefix string, workers int) {
	for _, name := range names {
		b.Run("lib="+name+"/g="+strconv.Itoa(workers), func(b *testing.B) {
			res, err := runHotKey(context.Background(), m[name], uniqueKey(prefix), workers, b.N)
			if err != nil {
				b.Fatal(err)
			}
			reportHotKey(b, res, b.N)
		})
	}
}

// benchRawUpdate runs "raw-update", one durable single-row UPDATE per op
// (update), for calibration next to the lease-row locks, and reports ops/s.
func benchRawUpdate(b *testing.B, update func(context.Context) error) {
	ctx := context.Background()
	b.Run("lib=raw-update/g=1", func(b *testing.B) {
		for b.Loop() {
			if err := update(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

// rawLeaseRow is the raw lease-row lock of an SQL database: try takes the
// row for owner or reports that another holds it, and a waiter tries again
// every millisecond; release gives the row back and reports whether owner
// held it.
func rawLeaseRow(try, release func(ctx context.Context, key, owner string) (bool, error)) mutexFunc {
	return func(ctx context.Context, key string) (func(context.Context) error, error) {
		owner := lock.NewOwner().String()
		for {
			ok, err := try(ctx, key, owner)
			if err != nil {
				return nil, err
			}
			if ok {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return func(ctx context.Context) error {
			held, err := release(ctx, key, owner)
			if err == nil && !held {
				err = errors.New("raw release: not held")
			}
			return err
		}, nil
	}
}
