package memlock_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/haita/haita/lock/memlock"
)

// Per-key locks: requests for different accounts run in parallel, those
// for the same account one at a time.
func Example() {
	var locks memlock.Locker // the zero value is ready to use
	balances := map[string]int{"alice": 100}
	var mu sync.Mutex // guards the map itself; the lease guards the account

	withdraw := func(ctx context.Context, account string, amount int) error {
		lease, err := locks.Acquire(ctx, "account/"+account)
		if err != nil {
			return err
		}
		defer lease.Release(context.WithoutCancel(ctx))
		mu.Lock()
		bal := balances[account]
		mu.Unlock()
		if bal < amount {
			return fmt.Errorf("insufficient funds: %d < %d", bal, amount)
		}
		mu.Lock()
		balances[account] = bal - amount
		mu.Unlock()
		return nil
	}

	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { _ = withdraw(context.Background(), "alice", 30) })
	}
	wg.Wait()
	fmt.Println("balance:", balances["alice"])
	// Output: balance: 10
}

// Map.Update makes "read, compute, write" on one key atomic.
func ExampleMap_Update() {
	var hits memlock.Map[string, int]
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			hits.Update("/home", func(n int, _ bool) (int, bool) { return n + 1, true })
		})
	}
	wg.Wait()
	n, _ := hits.Load("/home")
	fmt.Println(n)
	// Output: 100
}
