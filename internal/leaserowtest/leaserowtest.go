// Package leaserowtest holds the tests that the lease-row backends on SQL
// databases (lock/pglock, lock/mysqllock) share beyond the conformance suite
// of lock/locktest: a schema created by many at once, and a refusal that
// names the holder and its expiry by the database clock.
package leaserowtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// NewFunc returns a Locker with opts on the backend under test; the test
// closes it.
type NewFunc func(opts lock.Options) (lock.Locker, error)

// CreateTableConcurrent runs create eight times at once and three times
// more after them, all of which must succeed, and then checks that a Locker
// from newLocker, which must use the table create made, takes and releases
// a key.
func CreateTableConcurrent(t *testing.T, create func(context.Context) error, newLocker NewFunc) {
	t.Helper()
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- create(t.Context()) }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("CreateTable: %v", err)
		}
	}
	for range 3 {
		if err := create(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	l, err := newLocker(lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// HeldErrorReportsHolder checks that a TryAcquire refused because another
// Locker holds the key returns a *lock.HeldError that names the holder and
// its expiry, about a minute away for a TTL of a minute.
func HeldErrorReportsHolder(t *testing.T, newLocker NewFunc) {
	t.Helper()
	a, err := newLocker(lock.Options{TTL: time.Minute, Holder: "api-1/pid 7"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := newLocker(lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	le, err := a.TryAcquire(t.Context(), "held")
	if err != nil {
		t.Fatal(err)
	}
	defer le.Release(context.WithoutCancel(t.Context()))
	_, err = b.TryAcquire(t.Context(), "held")
	var he *lock.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("TryAcquire = %v, want *HeldError", err)
	}
	if he.Holder != "api-1/pid 7" {
		t.Errorf("Holder = %q", he.Holder)
	}
	if d := time.Until(he.ExpiresAt); d < 55*time.Second || d > 61*time.Second {
		t.Errorf("ExpiresAt in %v, want about a minute", d)
	}
}
