package redisslot_test

import (
	"fmt"

	"github.com/haita/haita/internal/redisslot"
)

// A lock key without a hash tag and its fencing counter land in the same
// slot, so one script may touch both on a Redis Cluster.
func ExampleCounterKey() {
	key := "invoice:42"
	counter := redisslot.CounterKey(key, ":haita:fence")
	fmt.Println(redisslot.Slot(key) == redisslot.Slot(counter))
	fmt.Println(redisslot.Slot("foo"), redisslot.Slot("{user1000}.following") == redisslot.Slot("{user1000}.followers"))
	// Output:
	// true
	// 12182 true
}
