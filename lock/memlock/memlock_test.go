package memlock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/memlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	var base memlock.Locker // the zero value is ready to use
	locktest.Run(t, locktest.Config{
		TTL: 300 * time.Millisecond,
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return base.With(opts) // every Locker the suite makes shares base's keys
		},
	})
}

// TestNoMemoryPerKey takes and releases a million distinct keys and checks
// that nothing is left of them.
func TestNoMemoryPerKey(t *testing.T) {
	var l memlock.Locker
	const n = 1_000_000
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				le, err := l.TryAcquire(ctx, fmt.Sprintf("user/%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				if err := le.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := l.Len(); got != 0 {
		t.Errorf("Len after releasing every key = %d, want 0", got)
	}
}

// TestFreedKeyTakenAgain: a freed key stays in its shard for its next
// acquire; taken again, it must not be evicted as free when other keys of
// the shard are freed after it.
func TestFreedKeyTakenAgain(t *testing.T) {
	var l memlock.Locker
	ctx := t.Context()
	le, err := l.Acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	held, err := l.Acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 { // some of them share "a"'s shard
		le, err := l.Acquire(ctx, fmt.Sprintf("other/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := le.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if le, err := l.TryAcquire(ctx, "a"); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held key = %v, %v; want ErrNotAcquired", le, err)
	}
	if got := l.Len(); got != 1 {
		t.Errorf("Len with one key held = %d, want 1", got)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.Len(); got != 0 {
		t.Errorf("Len after release = %d, want 0", got)
	}
}

// TestFIFO checks that waiters get the key in the order they came.
func TestFIFO(t *testing.T) {
	var l memlock.Locker
	ctx := t.Context()
	first, err := l.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			le, err := l.Acquire(ctx, "k")
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			_ = le.Release(ctx)
		})
		locktest.WaitUntilWaiting(t, &l, "k", i+1) // queue them in order i
	}
	_ = first.Release(ctx)
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("waiter %d served in place %d", got, want)
		}
		want++
	}
}

// TestExpiryHandsOver checks that a holder that never releases is passed
// over after its TTL, to a queued waiter, with a greater token.
func TestExpiryHandsOver(t *testing.T) {
	l, err := memlock.New(lock.Options{TTL: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	stale, err := l.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	next, err := l.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if next.Token() <= stale.Token() {
		t.Errorf("token %d after %d", next.Token(), stale.Token())
	}
	if err := stale.Release(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("stale Release = %v, want ErrNotHeld", err)
	}
	if err := next.Release(ctx); err != nil {
		t.Error(err)
	}
	if l.Len() != 0 {
		t.Errorf("Len = %d after release", l.Len())
	}
}

// TestMapUpdateIsAtomic is the lost increment on a concurrent map:
// "get, add one, put" loses updates; Update does not.
func TestMapUpdateIsAtomic(t *testing.T) {
	const workers, ops = 16, 500
	var m memlock.Map[string, int]
	var racy sync.Map // goroutine-safe, yet the compound operation is not
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range ops {
				m.Update("hits", func(v int, _ bool) (int, bool) { return v + 1, true })
				v, _ := racy.LoadOrStore("hits", 0)
				time.Sleep(time.Microsecond) // widen the window between get and put
				racy.Store("hits", v.(int)+1)
			}
		})
	}
	wg.Wait()
	if got, _ := m.Load("hits"); got != workers*ops {
		t.Errorf("Map.Update: hits = %d, want %d", got, workers*ops)
	}
	v, _ := racy.Load("hits")
	t.Logf("get-then-put on sync.Map: %d of %d increments kept", v, workers*ops)
	if v.(int) == workers*ops {
		t.Errorf("the racy get-then-put kept every increment: the race window is too small to show the bug")
	}
	m.Update("hits", func(int, bool) (int, bool) { return 0, false })
	if m.Len() != 0 {
		t.Errorf("Len after delete = %d", m.Len())
	}
}

func TestWithSharesKeys(t *testing.T) {
	var a memlock.Locker
	b, err := a.With(lock.Options{WaitLimit: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	le, err := a.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(t.Context(), "k"); !errors.Is(err, lock.ErrWaitLimit) {
		t.Errorf("With locker acquired a held key: %v", err)
	}
	_ = le.Release(context.Background())
	if _, err := a.With(lock.Options{TTL: -1}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("With(bad) = %v", err)
	}
}

func TestHeldErrorNamesHolder(t *testing.T) {
	var base memlock.Locker
	a, err := base.With(lock.Options{Holder: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	le, err := a.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer le.Release(context.Background())
	var held *lock.HeldError
	if _, err := base.TryAcquire(t.Context(), "k"); !errors.As(err, &held) || held.Holder != "worker-1" {
		t.Errorf("TryAcquire = %v, want a HeldError naming worker-1", err)
	}
}

// TestHotKeyNoStarvation has 8 goroutines take turns on one key as fast as
// they can: running goroutines may overtake woken waiters, but a waiter that
// lost for a millisecond gets the key handed over, so every goroutine gets
// a fair part.
func TestHotKeyNoStarvation(t *testing.T) {
	var l memlock.Locker
	const workers = 8
	var counts [workers]int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				le, err := l.Acquire(t.Context(), "hot")
				if err != nil {
					t.Error(err)
					return
				}
				counts[i]++
				for range 100 { // a short critical section
					_ = time.Now()
				}
				_ = le.Release(t.Context())
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	total := 0
	for _, c := range counts {
		total += c
	}
	t.Logf("acquires per goroutine: %v", counts)
	for i, c := range counts {
		if c < total/workers/10 {
			t.Errorf("goroutine %d got %d of %d acquires: starved", i, c, total)
		}
	}
	if l.Len() != 0 {
		t.Errorf("Len = %d after all released", l.Len())
	}
}

// TestQueuedGrantGetsFullTTL checks that a waiter handed the key after a
// long wait gets a whole TTL from the handoff, not from when it began to
// wait.
func TestQueuedGrantGetsFullTTL(t *testing.T) {
	const ttl = 300 * time.Millisecond
	l, err := memlock.New(lock.Options{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(ttl*2/3, func() { _ = a.Release(context.Background()) })
	b, err := l.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	defer b.Release(context.Background())
	if left := b.Expiry().Sub(granted); left < ttl*9/10 {
		t.Errorf("a lease handed over after a wait has %v left of a %v TTL", left, ttl)
	}
}
