package redlock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
)

// TestWaiterKilledInQueue kills a waiter process (SIGKILL) while it is
// first in the instances' queues of a key. The release names it, and
// nobody wakes; a waiter in this process, queued behind it, must still get
// the key once the dead waiter's place lapses (three of its polls), not be
// refused by the dead for ever.
func TestWaiterKilledInQueue(t *testing.T) {
	_, clients := instances(t, 3)
	const key = "killed"
	const poll = 200 * time.Millisecond
	if os.Getenv("HAITA_REDLOCK_CHILD") == "1" {
		l := newLocker(t, clients, lock.Options{PollInterval: poll})
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
		return
	}
	ctx := t.Context()
	holder := newLocker(t, clients, lock.Options{TTL: time.Minute})
	le, err := holder.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), "HAITA_REDLOCK_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	queued := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if sc.Text() == "queued" {
			queued = true
			break
		}
	}
	if !queued {
		t.Fatal("waiter process did not queue")
	}
	w := newLocker(t, clients, lock.Options{PollInterval: poll})
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		le, err := w.Acquire(wctx, key)
		if err == nil {
			err = le.Release(context.WithoutCancel(ctx))
		}
		got <- err
	}()
	locktest.WaitUntilWaiting(t, w, key, 1)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the live waiter: %v", err)
	}
}

// queued returns the waiters queued for key on c, first first.
func queued(t *testing.T, c redis.Scripter, key string) []string {
	t.Helper()
	m, err := c.(*redis.Client).ZRange(t.Context(), "haita:q:"+key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// until polls cond (reading Redis state) until it holds, for 10s at most.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
	}
}

// acquireAsync starts l.Acquire(ctx, key) and, when it is granted, releases
// at once; the channel reports the outcome.
func acquireAsync(ctx context.Context, l lock.Locker, key string) <-chan error {
	got := make(chan error, 1)
	go func() {
		le, err := l.Acquire(ctx, key)
		if err == nil {
			err = le.Release(context.WithoutCancel(ctx))
		}
		got <- err
	}()
	return got
}

// holdAll sets key for a foreign holder on the instances idx, for a
// minute.
func holdAll(t *testing.T, clients []redis.Scripter, key string, idx ...int) {
	t.Helper()
	for _, i := range idx {
		if err := clients[i].(*redis.Client).Set(t.Context(), key, "holder", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// free deletes key on instance c and, unless owner is "", publishes owner
// on the key's channel, as a release there does.
func free(t *testing.T, c redis.Scripter, key, owner string) {
	t.Helper()
	rc := c.(*redis.Client)
	if err := rc.Del(t.Context(), key).Err(); err != nil {
		t.Fatal(err)
	}
	if owner == "" {
		return
	}
	if err := rc.Publish(t.Context(), "haita:released:"+key, owner).Err(); err != nil {
		t.Fatal(err)
	}
}

// grants returns the fencing counter of key on c: how often it was granted.
func grants(t *testing.T, c redis.Scripter, key string) int64 {
	t.Helper()
	n, err := c.(*redis.Client).Get(t.Context(), redisslot.CounterKey(key, ":haita:fence")).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return n
}

// wait receives the outcomes of the Acquire calls of the named waiters, in
// order.
func wait(t *testing.T, names []string, got ...<-chan error) {
	t.Helper()
	for i, c := range got {
		if err := <-c; err != nil {
			t.Fatalf("waiter %s: %v", names[i], err)
		}
	}
}

// TestQueueSplitVoteKeepsPlace plays the release of a holder that reaches
// the instances one at a time while two waiters of other Lockers queue, x
// ahead of y. Instance 0 frees first and wakes x, which is granted there
// but finds the holder on the others and gives it back: x must still be
// first on instance 0, as on the others (had it lost its place, y would be
// first on instance 0, and once instance 1 frees and x splits the vote
// again, first on both free instances without anybody telling it). With
// the fallback poll at a minute, both waiters must then get the key by
// notification.
func TestQueueSplitVoteKeepsPlace(t *testing.T) {
	_, clients := instances(t, 3)
	const key = "splitplace"
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	holdAll(t, clients, key, 0, 1, 2)
	a := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	b := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	gotX := acquireAsync(ctx, a, key)
	locktest.WaitUntilWaiting(t, a, key, 1)
	gotY := acquireAsync(ctx, b, key)
	locktest.WaitUntilWaiting(t, b, key, 1)
	want := queued(t, clients[1], key)
	if len(want) != 2 {
		t.Fatalf("queue %v, want two waiters", want)
	}
	x := want[0]
	free(t, clients[0], key, x)
	until(t, "x was not granted instance 0 and did not give it back", func() bool {
		return grants(t, clients[0], key) >= 1 && clients[0].(*redis.Client).Exists(ctx, key).Val() == 0
	})
	if got := queued(t, clients[0], key); !slices.Equal(got, want) {
		t.Fatalf("after x gave back a split vote, instance 0 queues %v, instance 1 %v", got, want)
	}
	free(t, clients[1], key, x)
	wait(t, []string{"x", "y"}, gotX, gotY)
}

// TestQueueSameOrderEverywhere has waiter x granted on instance 0, where
// nobody queued, and held on the others, so that it queues there only and
// gives instance 0 back (twice: before and after it subscribed). A later waiter y then queues on all three. When x
// next attempts it queues on instance 0 too, and must take the place of
// its first attempt there, ahead of y, as on the others: instances that
// disagree on who is first let nobody win a majority.
func TestQueueSameOrderEverywhere(t *testing.T) {
	_, clients := instances(t, 3)
	const key = "sameorder"
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	holdAll(t, clients, key, 1, 2)
	a := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	b := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	gotX := acquireAsync(ctx, a, key)
	locktest.WaitUntilWaiting(t, a, key, 1)
	// Both attempts of x (before and after it subscribed) were granted
	// instance 0 and gave it back.
	until(t, "x was not granted instance 0 twice and did not give it back", func() bool {
		return grants(t, clients[0], key) == 2 && clients[0].(*redis.Client).Exists(ctx, key).Val() == 0
	})
	holdAll(t, clients, key, 0)
	gotY := acquireAsync(ctx, b, key)
	locktest.WaitUntilWaiting(t, b, key, 1)
	want := queued(t, clients[1], key)
	if len(want) != 2 {
		t.Fatalf("queue %v, want two waiters", want)
	}
	x := want[0]
	// Wake x without freeing anything: it attempts again and queues on
	// instance 0.
	if err := clients[1].(*redis.Client).Publish(ctx, "haita:released:"+key, x).Err(); err != nil {
		t.Fatal(err)
	}
	until(t, "x did not queue on instance 0", func() bool { return slices.Contains(queued(t, clients[0], key), x) })
	if got := queued(t, clients[0], key); !slices.Equal(got, want) {
		t.Fatalf("instance 0 queues %v, instance 1 %v", got, want)
	}
	for i := range clients {
		free(t, clients[i], key, x)
	}
	wait(t, []string{"x", "y"}, gotX, gotY)
}

// TestQueueRefusedWakesFirst frees the key without naming anyone (a release
// by a client that does not queue, or one whose message the first waiter
// x missed) while x sleeps. A new contender y is refused on every instance
// because it is x's turn; that refusal must wake x, or both sleep until
// their polls (a minute here).
func TestQueueRefusedWakesFirst(t *testing.T) {
	_, clients := instances(t, 3)
	const key = "refused"
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	holdAll(t, clients, key, 0, 1, 2)
	a := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	b := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	gotX := acquireAsync(ctx, a, key)
	locktest.WaitUntilWaiting(t, a, key, 1)
	for i := range clients {
		free(t, clients[i], key, "")
	}
	gotY := acquireAsync(ctx, b, key)
	wait(t, []string{"x", "y"}, gotX, gotY)
}

// scriptCount is a go-redis hook that counts the scripts a client ran.
type scriptCount struct{ n atomic.Int64 }

func (h *scriptCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if n := cmd.Name(); err == nil && (n == "evalsha" || n == "eval") {
			h.n.Add(1)
		}
		return err
	}
}

func (h *scriptCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestQueueLeaverPassesTurn frees the key while it is the turn of a waiter
// x whose wait then ends (as when a release names it just before its
// context ends): x leaves the queues, and the next waiter, y, must be
// woken, not left to its poll. y has its own clients, so that the test
// knows when y's attempts are over and y sleeps.
func TestQueueLeaverPassesTurn(t *testing.T) {
	servers, clients := instances(t, 3)
	const key = "leaver"
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	holdAll(t, clients, key, 0, 1, 2)
	var scripts scriptCount
	yclients := make([]redis.Scripter, len(servers))
	for i, s := range servers {
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		c.AddHook(&scripts)
		t.Cleanup(func() { _ = c.Close() })
		yclients[i] = c
	}
	a := newLocker(t, clients, lock.Options{PollInterval: time.Minute})
	b := newLocker(t, yclients, lock.Options{PollInterval: time.Minute})
	xctx, xcancel := context.WithCancel(ctx)
	defer xcancel()
	gotX := acquireAsync(xctx, a, key)
	locktest.WaitUntilWaiting(t, a, key, 1)
	gotY := acquireAsync(ctx, b, key)
	// y's first attempt and the one after it subscribed: three scripts
	// each.
	until(t, "y did not make its two attempts", func() bool { return scripts.n.Load() >= 6 })
	for i := range clients {
		free(t, clients[i], key, "")
	}
	xcancel()
	if err := <-gotX; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	if err := <-gotY; err != nil {
		t.Fatalf("next waiter: %v", err)
	}
}
