package memlock_test

import (
	"testing"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/memlock"
)

// multiConfig makes semaphores and reader-writer lockers over one Locker's
// keys, so that they contend as clients of one engine do.
func multiConfig() locktest.MultiConfig {
	var root memlock.Locker
	return locktest.MultiConfig{
		TTL: 200 * time.Millisecond,
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return root.Semaphore(opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return root.RWLocker(opts)
		},
	}
}

func TestSemaphoreConformance(t *testing.T) { locktest.RunSemaphore(t, multiConfig()) }

func TestRWLockConformance(t *testing.T) { locktest.RunRWLock(t, multiConfig()) }
