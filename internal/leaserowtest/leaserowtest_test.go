package leaserowtest_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/haita/haita/internal/leaserowtest"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// The helpers pass on a correct backend; the lease-row backends' own tests
// run them on their databases.
func TestOnMemlock(t *testing.T) {
	var base memlock.Locker
	newLocker := func(opts lock.Options) (lock.Locker, error) { return base.With(opts) }
	t.Run("HeldErrorReportsHolder", func(t *testing.T) {
		leaserowtest.HeldErrorReportsHolder(t, newLocker)
	})
	t.Run("CreateTableConcurrent", func(t *testing.T) {
		var calls atomic.Int32
		leaserowtest.CreateTableConcurrent(t, func(context.Context) error {
			calls.Add(1)
			return nil
		}, newLocker)
		if n := calls.Load(); n != 11 {
			t.Errorf("create called %d times, want 11", n)
		}
	})
}
