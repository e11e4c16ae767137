package memlock_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// A semaphore admits up to its limit of holders per key; the next one is
// refused (TryAcquire) or waits (Acquire). A client that disagrees on the
// limit is refused too.
func ExampleNewSemaphore() {
	ctx := context.Background()
	var root memlock.Locker
	exports, err := root.Semaphore(lock.Options{}, 2)
	if err != nil {
		panic(err)
	}
	defer exports.Close()
	a, _ := exports.TryAcquire(ctx, "exports")
	b, _ := exports.TryAcquire(ctx, "exports")
	_, err = exports.TryAcquire(ctx, "exports")
	fmt.Println("third:", errors.Is(err, lock.ErrNotAcquired))
	fmt.Println("tokens increase:", a.Token() < b.Token())

	other, _ := root.Semaphore(lock.Options{}, 5)
	defer other.Close()
	_, err = other.TryAcquire(ctx, "exports")
	fmt.Println("other limit:", errors.Is(err, lock.ErrLimitMismatch))

	_ = a.Release(ctx)
	_ = b.Release(ctx)
	// Output:
	// third: true
	// tokens increase: true
	// other limit: true
}

// Readers share a key; a writer waits for them and excludes everyone.
func ExampleNewRWLocker() {
	ctx := context.Background()
	rw, err := memlock.NewRWLocker(lock.Options{})
	if err != nil {
		panic(err)
	}
	defer rw.Close()
	r1, _ := rw.AcquireRead(ctx, "catalog")
	r2, err := rw.TryAcquireRead(ctx, "catalog")
	fmt.Println("second reader:", err)
	_, err = rw.TryAcquireWrite(ctx, "catalog")
	fmt.Println("writer while reading:", errors.Is(err, lock.ErrNotAcquired))
	_ = r1.Release(ctx)
	_ = r2.Release(ctx)
	w, err := rw.TryAcquireWrite(ctx, "catalog")
	fmt.Println("writer alone:", err, w.Token() > r2.Token())
	_ = w.Release(ctx)
	// Output:
	// second reader: <nil>
	// writer while reading: true
	// writer alone: <nil> true
}
