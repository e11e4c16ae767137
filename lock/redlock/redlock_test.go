package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/redlock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// instances starts n redis-servers with an append-only file (fsync always)
// and returns them with one client each.
func instances(t *testing.T, n int) ([]*testserver.RedisServer, []redis.Scripter) {
	servers := make([]*testserver.RedisServer, n)
	clients := make([]redis.Scripter, n)
	for i := range n {
		servers[i] = testserver.Redis(t, testserver.RedisOptions{AppendOnly: true})
		c := redis.NewClient(&redis.Options{Addr: servers[i].Addr(), MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { _ = c.Close() })
		clients[i] = c
	}
	return servers, clients
}

func newLocker(t *testing.T, clients []redis.Scripter, opts lock.Options) lock.Locker {
	t.Helper()
	l, err := redlock.New(clients, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	_, clients := instances(t, 5)
	locktest.Run(t, locktest.Config{New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
		return redlock.New(clients, opts)
	}})
}

func TestConformanceThree(t *testing.T) {
	_, clients := instances(t, 3)
	locktest.Run(t, locktest.Config{New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
		return redlock.New(clients, opts)
	}})
}

// TestInstancesDownAndBack stops and restarts instances while taking one key
// over and over: with a minority down leases are granted and tokens keep
// increasing; with a majority down nothing is granted and the error says
// why; once instances are back (their append-only files kept the counters)
// leases are granted again with greater tokens.
func TestInstancesDownAndBack(t *testing.T) {
	servers, clients := instances(t, 5)
	l := newLocker(t, clients, lock.Options{TTL: 2 * time.Second})
	ctx := t.Context()
	var last lock.Token
	take := func(step string) {
		t.Helper()
		for range 5 {
			le, err := l.Acquire(ctx, "downandback")
			if err != nil {
				t.Fatalf("%s: Acquire: %v", step, err)
			}
			if le.Token() <= last {
				t.Fatalf("%s: token %d after %d", step, le.Token(), last)
			}
			last = le.Token()
			if err := le.Release(ctx); err != nil {
				t.Fatalf("%s: Release: %v", step, err)
			}
		}
	}
	refused := func(step string) {
		t.Helper()
		start := time.Now()
		_, err := l.Acquire(ctx, "downandback")
		var qe *redlock.QuorumError
		if !errors.Is(err, lock.ErrIndeterminate) || !errors.As(err, &qe) {
			t.Fatalf("%s: Acquire = %v, want a QuorumError", step, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: refusing took %v", step, d)
		}
		t.Logf("%s: %v", step, err)
	}

	start := func(ids ...int) {
		t.Helper()
		for _, i := range ids {
			servers[i].Start()
			// go-redis backs off dialing after failures: wait until this
			// client reaches the instance again.
			c := clients[i].(*redis.Client)
			deadline := time.Now().Add(10 * time.Second)
			for c.Ping(ctx).Err() != nil {
				if time.Now().After(deadline) {
					t.Fatalf("instance %d unreachable after restart", i)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	take("all up")
	servers[0].Stop()
	take("one down")
	servers[1].Kill()
	take("two down")
	servers[2].Stop()
	refused("three down")
	start(0)
	take("0 back, two down")
	servers[3].Stop()
	servers[4].Kill()
	start(1, 2)
	// 0, 1 and 2 missed the acquires made while they were down: their
	// counters are behind, and the write-back must still keep tokens
	// increasing.
	take("only 0, 1, 2 up")
	start(3, 4)
	take("all back")
}

// TestHeldByMajority holds the key on 3 of 5 instances behind haita's back:
// a haita acquire must fail as held and leave nothing on the other two.
func TestHeldByMajority(t *testing.T) {
	_, clients := instances(t, 5)
	l := newLocker(t, clients, lock.Options{})
	ctx := t.Context()
	for i := range 3 {
		if !clients[i].(*redis.Client).SetNX(ctx, "majority", "other", 5*time.Second).Val() {
			t.Fatal("SET NX failed")
		}
	}
	_, err := l.TryAcquire(ctx, "majority")
	var held *lock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("TryAcquire = %v, want a HeldError", err)
	}
	if d := time.Until(held.ExpiresAt); d < 4*time.Second || d > 5*time.Second {
		t.Errorf("ExpiresAt in %v, want about 5s", d)
	}
	for i := 3; i < 5; i++ {
		if n := clients[i].(*redis.Client).Exists(ctx, "majority").Val(); n != 0 {
			t.Errorf("instance %d keeps the key after a failed acquire", i)
		}
	}
	// A minority held by another owner does not stop haita.
	for i := range 2 {
		clients[i].(*redis.Client).Del(ctx, "majority")
	}
	le, err := l.TryAcquire(ctx, "majority")
	if err != nil {
		t.Fatalf("TryAcquire with 1 of 5 held elsewhere: %v", err)
	}
	_ = le.Release(ctx)
}

// TestSlowInstance pauses one instance of three: leases are still granted
// (within the client's read timeout) and the validity shrinks by the time
// the slow instance took.
func TestSlowInstance(t *testing.T) {
	servers, clients := instances(t, 3)
	fast := make([]redis.Scripter, len(clients))
	for i, s := range servers {
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		fast[i] = c
	}
	l := newLocker(t, fast, lock.Options{TTL: 5 * time.Second})
	servers[2].Pause()
	defer servers[2].Resume()
	start := time.Now()
	le, err := l.Acquire(t.Context(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(le.Expiry()); left > 5*time.Second-time.Since(start)+10*time.Millisecond {
		t.Errorf("lease valid for %v after a slow acquire of %v", left, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNew(t *testing.T) {
	for name, clients := range map[string][]redis.Scripter{
		"none": nil,
		"nil":  {nil},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := redlock.New(clients, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
				t.Fatalf("New = %v", err)
			}
		})
	}
}

// TestWakeByNotification checks that a release wakes a waiter of another
// Locker by notification: with the fallback poll at a minute, every one of
// a chain of handoffs between two Lockers must come well before it.
func TestWakeByNotification(t *testing.T) {
	_, clients := instances(t, 3)
	a := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	b := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	if !a.Capabilities().Notify {
		t.Fatal("Capabilities().Notify is false with *redis.Client instances")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := range 10 {
		key := fmt.Sprintf("notify-%d", i)
		le, err := a.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			le, err := b.Acquire(ctx, key)
			if err == nil {
				err = le.Release(context.WithoutCancel(ctx))
			}
			got <- err
		}()
		locktest.WaitUntilWaiting(t, b, key, 1)
		if err := le.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("waiter after a release: %v", err)
		}
	}
}

// TestWaitPastSlowRound pauses a majority of the instances (CLIENT PAUSE)
// for longer than the instance timeout, as a loaded host can: the first
// round of a waiting Acquire gets no quorum because those instances answer
// too late. The Acquire gives back what it got and tries again, as the
// Redlock algorithm does, and is granted once they answer; a TryAcquire
// reports the failed round.
func TestWaitPastSlowRound(t *testing.T) {
	_, clients := instances(t, 5)
	l := newLocker(t, clients, lock.Options{TTL: 2 * time.Second}) // instance timeout 200ms
	ctx := t.Context()
	pause := func() {
		t.Helper()
		for _, c := range clients[:3] {
			if err := c.(*redis.Client).Do(ctx, "CLIENT", "PAUSE", 600, "ALL").Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	pause()
	if _, err := l.TryAcquire(ctx, "slowround-try"); !errors.Is(err, lock.ErrIndeterminate) {
		t.Fatalf("TryAcquire with a paused majority = %v, want a QuorumError", err)
	}
	for _, c := range clients[:3] {
		if err := c.(*redis.Client).Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
			t.Fatal(err)
		}
	}
	pause()
	le, err := l.Acquire(ctx, "slowround")
	if err != nil {
		t.Fatalf("Acquire with a majority paused for one round: %v", err)
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
