package checkout_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/memlock"
)

func newLockManager(t *testing.T, l lock.Locker, clk *clock) (*checkout.Manager, *checkout.LockStore) {
	t.Helper()
	s, err := checkout.NewLockStore(l, checkout.LockStoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	m, err := checkout.New(s, checkout.Options{Idle: idle, MaxAge: maxAge, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

func TestLockStore(t *testing.T) {
	ctx := t.Context()
	l, err := memlock.New(lock.Options{Holder: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	clk := newClock()
	m, _ := newLockManager(t, l, clk)

	t.Run("race", func(t *testing.T) {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				_, err := m.Acquire(ctx, "doc", fmt.Sprintf("user%d", i))
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, checkout.ErrHeld):
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d winners", wins.Load())
		}
	})

	t.Run("expiry and break", func(t *testing.T) {
		a, err := m.Acquire(ctx, "e", "alice")
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(idle)
		if _, err := m.Heartbeat(ctx, "e", a.Token); !errors.Is(err, checkout.ErrExpired) {
			t.Fatalf("heartbeat after idle: %v", err)
		}
		b, err := m.Acquire(ctx, "e", "bob")
		if err != nil {
			t.Fatal(err)
		}
		if b.Fence <= a.Fence {
			t.Fatalf("fence %d after %d", b.Fence, a.Fence)
		}
		if _, err := m.Break(ctx, "e", "root", "why not"); err != nil {
			t.Fatal(err)
		}
		var be *checkout.BrokenError
		if _, err := m.Heartbeat(ctx, "e", b.Token); !errors.As(err, &be) || be.By != "root" {
			t.Fatalf("heartbeat after break: %v", err)
		}
		if err := m.Save(ctx, "e", b.Token, nil); !errors.Is(err, checkout.ErrNoTransaction) {
			t.Fatalf("Save: %v", err)
		}
	})

	t.Run("release owner", func(t *testing.T) {
		for _, r := range []string{"o1", "o2"} {
			if _, err := m.Acquire(ctx, r, "carol"); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := m.ReleaseOwner(ctx, "carol"); n != 2 || err != nil {
			t.Fatalf("ReleaseOwner = %d, %v", n, err)
		}
		if _, err := m.Acquire(ctx, "o1", "dave"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLockStoreProcesses: two stores over file locks in one directory stand
// for two processes; the second sees the first's lock holder.
func TestLockStoreProcesses(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	clk := newClock()
	open := func(holder string) *checkout.Manager {
		l, err := filelock.New(dir, lock.Options{Holder: holder})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		m, _ := newLockManager(t, l, clk)
		return m
	}
	m1, m2 := open("web-1"), open("web-2")
	a, err := m1.Acquire(ctx, "doc", "alice")
	if err != nil {
		t.Fatal(err)
	}
	var he *checkout.HeldError
	if _, err := m2.Acquire(ctx, "doc", "bob"); !errors.As(err, &he) || he.Holder != "web-1" {
		t.Fatalf("second process: %v", err)
	}
	if got, ok, err := m2.Get(ctx, "doc"); !ok || err != nil || got.Owner != "web-1" {
		t.Fatalf("Get from second process = %+v, %v, %v", got, ok, err)
	}
	if err := m1.Release(ctx, "doc", a.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Acquire(ctx, "doc", "bob"); err != nil {
		t.Fatal(err)
	}
	_ = time.Second
}
