package leaserowtest_test

import (
	"testing"

	"github.com/haita/haita/internal/leaserowtest"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// A backend's test is one call with a constructor of its Lockers; the
// lease-row backends pass their New on a database of the test's own.
func ExampleHeldErrorReportsHolder() {
	_ = func(t *testing.T) { // func TestHeldErrorReportsHolder(t *testing.T)
		var base memlock.Locker
		leaserowtest.HeldErrorReportsHolder(t, func(opts lock.Options) (lock.Locker, error) {
			return base.With(opts)
		})
	}
}
