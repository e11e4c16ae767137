package redlock_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redlock"
)

// Five independent Redis masters: a lease needs three of them.
func Example() {
	var clients []redis.Scripter
	for _, addr := range []string{"redis-a:6379", "redis-b:6379", "redis-c:6379", "redis-d:6379", "redis-e:6379"} {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		clients = append(clients, c)
	}
	locker, err := redlock.New(clients, lock.Options{})
	if err != nil {
		panic(err)
	}
	defer locker.Close()

	le, err := locker.Acquire(context.Background(), "invoice:42")
	if err != nil {
		fmt.Println("no lock:", err)
		return
	}
	defer le.Release(context.Background())
	fmt.Println("token", le.Token())
}
