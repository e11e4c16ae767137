package lock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// Every backend hands out leases the same way; memlock needs no server.
// Errors are told apart with errors.Is and errors.As, never with ==.
func Example() {
	ctx := context.Background()
	locker, err := memlock.New(lock.Options{TTL: time.Minute, WaitLimit: 50 * time.Millisecond, Holder: "worker-1"})
	if err != nil {
		panic(err)
	}
	defer locker.Close()

	lease, err := locker.Acquire(ctx, "invoice/42")
	if err != nil {
		panic(err)
	}
	fmt.Println("holding", lease.Key(), "with a token:", lease.Token() > 0)

	_, err = locker.Acquire(ctx, "invoice/42") // waits 50ms, then gives up
	fmt.Println("second acquire passed the wait limit:", errors.Is(err, lock.ErrWaitLimit))

	_, err = locker.TryAcquire(ctx, "invoice/42")
	var held *lock.HeldError
	if errors.As(err, &held) {
		fmt.Println("held by", held.Holder)
	}

	if err := lease.Release(ctx); err != nil {
		panic(err)
	}
	fmt.Println("after release:", lease.Err())
	fmt.Println("release again is not held:", errors.Is(lease.Release(ctx), lock.ErrNotHeld))
	// Output:
	// holding invoice/42 with a token: true
	// second acquire passed the wait limit: true
	// held by worker-1
	// after release: lock: lease released
	// release again is not held: true
}

// Fencing: storage keeps the greatest token that wrote and refuses older
// ones, so a holder that was paused past its lease cannot overwrite the
// work of the next holder.
func ExampleToken() {
	ctx := context.Background()
	locker, _ := memlock.New(lock.Options{TTL: 20 * time.Millisecond})
	var stored lock.Token // in real storage: a column next to the data
	write := func(tok lock.Token) error {
		if tok <= stored {
			return fmt.Errorf("stale token %d, storage has %d", tok, stored)
		}
		stored = tok
		return nil
	}

	slow, _ := locker.Acquire(ctx, "report")
	<-slow.Done() // paused past its TTL: the lease is lost
	next, _ := locker.Acquire(ctx, "report")
	fmt.Println("next holder writes:", write(next.Token()))
	fmt.Println("paused holder writes:", write(slow.Token()) != nil)
	_ = next.Release(ctx)
	// Output:
	// next holder writes: <nil>
	// paused holder writes: true
}

// Metrics are Prometheus collectors you register; one Metrics serves many
// Lockers.
func ExampleNewMetrics() {
	m := lock.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	locker, _ := memlock.New(lock.Options{Metrics: m})
	lease, _ := locker.Acquire(context.Background(), "k")
	_ = lease.Release(context.Background())

	families, _ := reg.Gather()
	for _, f := range families {
		fmt.Println(f.GetName())
	}
	// Output:
	// haita_lock_acquire_wait_seconds
	// haita_lock_hold_seconds
}
