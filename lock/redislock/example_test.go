package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
)

// Guard a job with a lease, and hand its fencing token to the storage it
// writes to.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	locker, err := redislock.New(rdb, redislock.Options{Options: lock.Options{
		TTL:         10 * time.Second,
		AutoRefresh: true,
		WaitLimit:   5 * time.Second,
	}})
	if err != nil {
		panic(err)
	}
	defer locker.Close()

	le, err := locker.Acquire(ctx, "report:2026-11")
	switch {
	case errors.Is(err, lock.ErrWaitLimit):
		fmt.Println("someone else is building the report")
		return
	case err != nil:
		fmt.Println("no lock:", err)
		return
	}
	defer le.Release(context.WithoutCancel(ctx))

	// Stop when the lease is lost; write with the token so that storage
	// refuses a writer whose lease has passed.
	jobCtx, cancel := le.Context(ctx)
	defer cancel()
	_ = jobCtx
	fmt.Println("building with token", le.Token() > 0)
}
