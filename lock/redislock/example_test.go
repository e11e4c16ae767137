package redislock_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
)

// Store is storage that keeps the greatest fencing token that wrote and
// refuses a write with a smaller one (package sqlcc has the SQL for it).
type Store interface {
	Write(ctx context.Context, key string, data []byte, token lock.Token) error
}

// Guard a job with a lease, and hand its fencing token to the storage it
// writes to. The README's lock-contract snippet is the body of writeInvoice.
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	var store Store // the application's storage
	if err := writeInvoice(context.Background(), rdb, store, []byte("…")); err != nil {
		fmt.Println(err)
	}
}

func writeInvoice(ctx context.Context, rdb *redis.Client, store Store, data []byte) error {
	locker, err := redislock.New(rdb, lock.Options{TTL: 10 * time.Second, AutoRefresh: true})
	if err != nil {
		return err
	}
	defer locker.Close()

	lease, err := locker.Acquire(ctx, "invoice/42") // waits; TryAcquire does not
	if err != nil {
		return err // errors.Is(err, lock.ErrWaitLimit), context.DeadlineExceeded, …
	}
	defer lease.Release(context.WithoutCancel(ctx))
	ctx, cancel := lease.Context(ctx) // cancelled when the lease is lost
	defer cancel()

	// ... long work under ctx ...

	if err := lease.Check(); err != nil { // Done can lag after a pause; Check reads the clock
		return err
	}
	return store.Write(ctx, "invoice/42", data, lease.Token()) // storage refuses tokens older than the last writer's
}
