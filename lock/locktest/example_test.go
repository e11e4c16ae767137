package locktest_test

import (
	"testing"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/memlock"
)

// A backend's conformance test is one call. Config.New must return
// Lockers that contend with each other, as clients of one engine do; a
// network backend also starts its server here (internal/testserver reuses
// the parent's server in the multi-process test's children).
func ExampleRun() {
	_ = func(t *testing.T) { // func TestConformance(t *testing.T)
		var base memlock.Locker
		locktest.Run(t, locktest.Config{
			New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
				return base.With(opts)
			},
		})
	}
}
