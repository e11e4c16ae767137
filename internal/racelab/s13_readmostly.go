package racelab

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// readMostlyScenario is a record read far more often than written (9 reads
// to 1 write): a writer sets both halves of the record, a reader checks
// that they match. Broken: no lock, and readers see torn records. Fixed: a
// mutex, which lets one reader in at a time, and a reader-writer lock,
// which lets readers overlap and so reads more per second.
func readMostlyScenario() *Scenario {
	return &Scenario{
		ID: 13, Name: "read-mostly", Title: "A record read 9 times for every write: torn reads, mutex vs RW lock",
		Seeds: "S5 S7", Unit: "torn reads", Workers: 8, Ops: 50,
		cases: func(e *env) []Case {
			return []Case{
				{Variant: "no lock", Kind: Broken, Engine: Memory, run: readMostly("")},
				{Variant: "memlock mutex", Kind: Fixed, Engine: Memlock, run: readMostly("mutex")},
				{Variant: "memlock RWLocker", Kind: Fixed, Engine: Memlock, run: readMostly("rw")},
			}
		},
	}
}

// readMostly runs the workers on one record; every tenth operation writes,
// staggered by worker, so that while one worker writes the others read.
func readMostly(kind string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		var a, b atomic.Int64
		var torn, reads atomic.Int64
		var read, write func(ctx context.Context, key string) (*lock.Lease, error)
		switch kind {
		case "mutex":
			l, err := memlock.New(lock.Options{})
			if err != nil {
				return 0, "", err
			}
			defer l.Close()
			read, write = l.Acquire, l.Acquire
		case "rw":
			l, err := memlock.NewRWLocker(lock.Options{})
			if err != nil {
				return 0, "", err
			}
			defer l.Close()
			read, write = l.AcquireRead, l.AcquireWrite
		}
		key := rc.key("record")
		err := rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			isWrite := (w+i)%10 == 0
			var le *lock.Lease
			if read != nil {
				acquire := read
				if isWrite {
					acquire = write
				}
				var err error
				if le, err = acquire(ctx, key); err != nil {
					return err
				}
			}
			o.attempt()
			if isWrite {
				v := a.Load() + 1
				a.Store(v)
				rc.widen()
				b.Store(v)
			} else {
				x := a.Load()
				rc.widen()
				if b.Load() != x {
					torn.Add(1)
				}
				reads.Add(1)
			}
			if le != nil {
				return le.Release(ctx)
			}
			return nil
		})
		return torn.Load(), fmt.Sprintf("%d reads, %d torn (halves of the record from different writes)", reads.Load(), torn.Load()), err
	}
}
