package redislock_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
)

// TestQueueAcrossLockers checks the queue in Redis: waiters of different
// Lockers (different processes, as far as Redis can tell) get the key in
// the order they started waiting, each by one release.
func TestQueueAcrossLockers(t *testing.T) {
	c := single(t)
	ctx := t.Context()
	holder := newLocker(t, c, lock.Options{})
	le, err := holder.Acquire(ctx, "fifo")
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 5
	var order []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range waiters {
		l := newLocker(t, c, lock.Options{PollInterval: time.Minute})
		wg.Go(func() {
			le, err := l.Acquire(ctx, "fifo")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			_ = le.Release(ctx)
		})
		locktest.WaitUntilWaiting(t, l, "fifo", 1)
	}
	// A TryAcquire does not barge ahead of the queue.
	if _, err := holder.TryAcquire(ctx, "fifo"); err == nil {
		t.Fatal("TryAcquire took a held key")
	}
	_ = le.Release(ctx)
	wg.Wait()
	for i, g := range order {
		if g != i {
			t.Fatalf("waiters got the key in the order %v, want the order they queued", order)
		}
	}
}

// TestWaiterKilledInQueue kills waiter processes (SIGKILL) while they queue
// for a key in Redis: the first is handed the key by the release, the
// second is still queued when that grant expires. A waiter in this process,
// queued behind them, must still get the key within about one waiter TTL of
// the release, not be blocked by the dead.
func TestWaiterKilledInQueue(t *testing.T) {
	srv := testserver.Redis(t, testserver.RedisOptions{})
	const ttl = 2 * time.Second
	const key = "killed"
	if os.Getenv("HAITA_REDISLOCK_CHILD") == "1" {
		waiterChild(t, srv.Addr(), key, ttl)
		return
	}
	c := single(t)
	ctx := t.Context()
	holder := newLocker(t, c, lock.Options{TTL: time.Minute})
	le, err := holder.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
		cmd.Env = append(os.Environ(), "HAITA_REDISLOCK_CHILD=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		queued := false
		for sc := bufio.NewScanner(out); sc.Scan(); {
			if sc.Text() == "queued" {
				queued = true
				break
			}
		}
		if !queued {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("waiter process did not queue")
		}
		t.Cleanup(func() { _ = cmd.Wait() })
		defer func() { _ = cmd.Process.Kill() }()
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	w := newLocker(t, c, lock.Options{TTL: ttl})
	got := make(chan time.Time, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*ttl)
		defer cancel()
		le, err := w.Acquire(wctx, key)
		if err != nil {
			t.Errorf("the live waiter: %v", err)
			close(got)
			return
		}
		got <- time.Now()
		_ = le.Release(context.WithoutCancel(ctx))
	}()
	locktest.WaitUntilWaiting(t, w, key, 1)
	released := time.Now()
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The release hands the key to the first dead waiter for its TTL; the
	// second's place lapses within its TTL of its last renewal, before that.
	at, ok := <-got
	if !ok {
		return
	}
	if d := at.Sub(released); d > ttl+time.Second {
		t.Fatalf("the live waiter got the key %v after the release, want within about %v", d, ttl)
	}
}

// waiterChild is the waiter process of TestWaiterKilledInQueue: it queues
// for key, says "queued" and waits to be killed.
func waiterChild(t *testing.T, addr, key string, ttl time.Duration) {
	c := single(t)
	l := newLocker(t, c, lock.Options{TTL: ttl})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if le, err := l.Acquire(ctx, key); err == nil {
			_ = le.Release(context.Background())
		}
	}()
	locktest.WaitUntilWaiting(t, l, key, 1)
	fmt.Println("queued")
	<-done
}

// TestForeignReleaseWakes checks keyspace notifications: with them enabled,
// a waiter wakes as soon as another client deletes the key it waits for,
// far earlier than its poll (a minute) or its place's renewal (a third of
// its TTL).
func TestForeignReleaseWakes(t *testing.T) {
	c := single(t)
	ctx := t.Context()
	if err := c.ConfigSet(ctx, "notify-keyspace-events", "Kgx").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.ConfigSet(context.Background(), "notify-keyspace-events", "") })
	w := newLocker(t, c, lock.Options{TTL: time.Minute, PollInterval: time.Minute})
	for i := range 10 {
		key := fmt.Sprintf("foreign-%d", i)
		if !c.SetNX(ctx, key, "other", time.Hour).Val() {
			t.Fatal("SET NX failed")
		}
		got := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			le, err := w.Acquire(wctx, key)
			if err == nil {
				err = le.Release(ctx)
			}
			got <- err
		}()
		locktest.WaitUntilWaiting(t, w, key, 1)
		c.Del(ctx, key)
		if err := <-got; err != nil {
			t.Fatalf("waiter after a foreign DEL: %v", err)
		}
	}
}

// TestQueueGrantWritesHolder checks that a release handing the key to a
// waiter of another Locker, queued in Redis, writes that waiter's holder
// record: its name and the token of its grant, not the releaser's.
func TestQueueGrantWritesHolder(t *testing.T) {
	c := single(t)
	ctx := t.Context()
	a := newLocker(t, c, lock.Options{Holder: "alpha"})
	b := newLocker(t, c, lock.Options{Holder: "beta", PollInterval: time.Minute})
	le, err := a.Acquire(ctx, "queued-holder")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *lock.Lease, 1)
	go func() {
		w, err := b.Acquire(ctx, "queued-holder")
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	locktest.WaitUntilWaiting(t, b, "queued-holder", 1)
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	w := <-got
	if w == nil {
		return
	}
	defer func() { _ = w.Release(ctx) }()
	info, err := a.Holder(ctx, "queued-holder")
	if err != nil {
		t.Fatalf("Holder after the queue's grant: %v", err)
	}
	if info.Holder != "beta" || info.Token != w.Token() || info.Token <= le.Token() {
		t.Errorf("Holder = %+v after the queue's grant, want holder beta with token %d (> %d)", info, w.Token(), le.Token())
	}
}
