package redisholder_test

import (
	"fmt"

	"github.com/haita/haita/internal/redisholder"
	"github.com/haita/haita/internal/redisslot"
)

// A lock key's holder record lives in the key's hash slot, so that the
// holder script reads both in one call on a Redis Cluster too.
func ExampleKey() {
	key := "invoice:42"
	rec := redisholder.Key(key, "app:")
	fmt.Println(redisslot.Slot(rec) == redisslot.Slot(key))
	// Output:
	// true
}
