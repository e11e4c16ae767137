package filelock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
)

// Example takes a key that every process using the same directory excludes,
// and shows that a second holder — here another goroutine's TryAcquire —
// is refused until the first releases, then gets a greater fencing token.
func Example() {
	dir, err := os.MkdirTemp("", "locks")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	l, err := filelock.New(dir, lock.Options{Holder: "example"})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()

	first, err := l.Acquire(ctx, "invoice/2024-001")
	if err != nil {
		log.Fatal(err)
	}
	_, err = l.TryAcquire(ctx, "invoice/2024-001")
	var held *lock.HeldError
	fmt.Println("second holder refused:", errors.As(err, &held), "held by", held.Holder)

	if err := first.Release(ctx); err != nil {
		log.Fatal(err)
	}
	second, err := l.TryAcquire(ctx, "invoice/2024-001")
	if err != nil {
		log.Fatal(err)
	}
	defer second.Release(ctx)
	fmt.Println("token increased:", second.Token() > first.Token())

	name, _ := filelock.FileName("invoice/2024-001")
	fmt.Println("lock file:", name)
	// Output:
	// second holder refused: true held by example
	// token increased: true
	// lock file: k-invoice%2f2024-001.lock
}
