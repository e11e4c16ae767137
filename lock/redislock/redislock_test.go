package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/redislock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// single starts a redis-server for t and returns a client on it, closed by
// t's cleanup.
func single(t *testing.T) *redis.Client {
	s := testserver.Redis(t, testserver.RedisOptions{})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func cluster(t *testing.T) *redis.ClusterClient {
	s := testserver.RedisCluster(t, 3)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: s.Addrs()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newLocker(t testing.TB, c redislock.Client, opts lock.Options) lock.Locker {
	t.Helper()
	l, err := redislock.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	c := single(t)
	locktest.Run(t, locktest.Config{New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
		return redislock.New(c, opts)
	}})
}

func TestConformancePrefix(t *testing.T) {
	c := single(t)
	locktest.Run(t, locktest.Config{New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
		return redislock.New(c, opts, redislock.WithPrefix("app{1}:"))
	}})
}

func TestConformanceCluster(t *testing.T) {
	c := cluster(t)
	locktest.Run(t, locktest.Config{New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
		return redislock.New(c, opts)
	}})
}

// TestClusterSlots takes keys on every master of a cluster: the acquire and
// release scripts touch the lock key and its fencing counter, which Redis
// Cluster refuses (CROSSSLOT) unless they share a slot.
func TestClusterSlots(t *testing.T) {
	c := cluster(t)
	l := newLocker(t, c, lock.Options{})
	masters := map[string]bool{}
	var last lock.Token
	for i := range 60 {
		key := fmt.Sprintf("slots-%d", i)
		le, err := l.Acquire(t.Context(), key)
		if err != nil {
			t.Fatalf("Acquire(%q): %v", key, err)
		}
		if le.Token() == 0 {
			t.Fatalf("Acquire(%q): zero token", key)
		}
		if i == 0 {
			last = le.Token()
		}
		node, err := c.MasterForKey(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		masters[node.Options().Addr] = true
		got, err := node.Get(t.Context(), key).Result()
		if err != nil || got != le.Owner() {
			t.Fatalf("GET %q on its master = %q, %v; want the owner %q", key, got, err, le.Owner())
		}
		if err := le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if len(masters) != 3 {
		t.Errorf("keys landed on %d masters, want 3", len(masters))
	}
	// Tokens of one key increase across holders on the cluster too.
	for range 3 {
		le, err := l.Acquire(t.Context(), "slots-0")
		if err != nil {
			t.Fatal(err)
		}
		if le.Token() <= last {
			t.Fatalf("token %d after %d", le.Token(), last)
		}
		last = le.Token()
		_ = le.Release(t.Context())
	}
}

// TestWireCompatible checks the convention other Redis lock clients use: the
// key holds the owner value with a TTL, and a key set with SET NX PX by
// another client excludes haita until that client deletes it.
func TestWireCompatible(t *testing.T) {
	c := single(t)
	l := newLocker(t, c, lock.Options{TTL: 5 * time.Second})
	ctx := t.Context()

	le, err := l.TryAcquire(ctx, "wire")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get(ctx, "wire").Result(); v != le.Owner() {
		t.Fatalf("GET wire = %q, want the owner %q", v, le.Owner())
	}
	if pttl := c.PTTL(ctx, "wire").Val(); pttl <= 0 || pttl > 5*time.Second {
		t.Fatalf("PTTL wire = %v", pttl)
	}
	if ok := c.SetNX(ctx, "wire", "other", time.Second).Val(); ok {
		t.Fatal("another client's SET NX took a key haita holds")
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, "wire").Val(); n != 0 {
		t.Fatal("key still there after Release")
	}

	// Another client holds the key: haita waits until it deletes it.
	if !c.SetNX(ctx, "wire", "other", 10*time.Second).Val() {
		t.Fatal("SET NX failed")
	}
	_, err = l.TryAcquire(ctx, "wire")
	var held *lock.HeldError
	if !errors.As(err, &held) || held.ExpiresAt.IsZero() {
		t.Fatalf("TryAcquire on a foreign key: %v, want a HeldError with its expiry", err)
	}
	if d := time.Until(held.ExpiresAt); d < 9*time.Second || d > 10*time.Second {
		t.Errorf("ExpiresAt in %v, want about 10s", d)
	}
	// The foreign client publishes nothing: the fallback poll finds the key.
	wl := newLocker(t, c, lock.Options{PollInterval: 200 * time.Millisecond})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		locktest.WaitUntilWaiting(t, wl, "wire", 1)
		c.Del(context.Background(), "wire")
	})
	le, err = wl.Acquire(ctx, "wire")
	if err != nil {
		t.Fatal(err)
	}
	_ = le.Release(ctx)
}

// TestSharedSubscription checks that many waiters on many keys share one
// pub/sub connection and that it lets go of channels nobody waits on.
func TestSharedSubscription(t *testing.T) {
	c := single(t)
	holder := newLocker(t, c, lock.Options{})
	waiters := newLocker(t, c, lock.Options{})
	ctx := t.Context()
	const keys, perKey = 10, 3
	var leases []*lock.Lease
	for i := range keys {
		le, err := holder.Acquire(ctx, fmt.Sprintf("shared-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, le)
	}
	var got atomic.Int32
	var wg sync.WaitGroup
	for i := range keys {
		for range perKey {
			wg.Go(func() {
				le, err := waiters.Acquire(ctx, fmt.Sprintf("shared-%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				got.Add(1)
				_ = le.Release(ctx)
			})
		}
	}
	waitFor(t, func() bool {
		return c.PubSubNumSub(ctx, "haita:released:shared-9").Val()["haita:released:shared-9"] == 1
	})
	waitFor(t, func() bool { return len(c.PubSubChannels(ctx, "haita:released:shared-*").Val()) == keys })
	if n := pubsubClients(t, c); n != 1 {
		t.Errorf("%d pub/sub connections for %d waiters, want 1", n, keys*perKey)
	}
	for _, le := range leases {
		_ = le.Release(ctx)
	}
	wg.Wait()
	if got.Load() != keys*perKey {
		t.Fatalf("%d acquired, want %d", got.Load(), keys*perKey)
	}
	waitFor(t, func() bool { return len(c.PubSubChannels(ctx, "haita:released:shared-*").Val()) == 0 })
}

func pubsubClients(t *testing.T, c *redis.Client) int {
	list, err := c.ClientList(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWakeAcrossLockers checks the pub/sub path: a release by one Locker
// (another process, as far as Redis can tell) hands the key to a waiter of
// another, which learns of it by the grant message: with the poll at a
// minute and the queue renewal at 10s, a missed message shows as seconds.
func TestWakeAcrossLockers(t *testing.T) {
	c := single(t)
	a := newLocker(t, c, lock.Options{})
	b := newLocker(t, c, lock.Options{PollInterval: time.Minute})
	ctx := t.Context()
	for i := range 20 {
		key := fmt.Sprintf("wake-%d", i)
		le, err := a.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			le2, err := b.Acquire(ctx, key)
			if err != nil {
				t.Error(err)
				got <- time.Time{}
				return
			}
			got <- time.Now()
			_ = le2.Release(ctx)
		}()
		locktest.WaitUntilWaiting(t, b, key, 1)
		released := time.Now()
		_ = le.Release(ctx)
		// b polls once a minute: a wake within seconds came from the
		// release's notification, however loaded the machine is.
		if d := (<-got).Sub(released); d > 10*time.Second {
			t.Fatalf("waiter woke %v after the release", d)
		}
	}
}

// TestHotKeyFair runs 8 goroutines of one Locker on one key, each taking it
// again at once after releasing it. Nobody may be starved, and no waiter
// may miss its grant: with the poll at a minute and the queue renewal at a
// third of the TTL, a missed grant shows as a wait of many seconds.
func TestHotKeyFair(t *testing.T) {
	c := single(t)
	l := newLocker(t, c, lock.Options{TTL: time.Minute, PollInterval: time.Minute})
	const workers = 8
	var counts [workers]int
	var waits []time.Duration
	var mu sync.Mutex
	var inside atomic.Int32
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				start := time.Now()
				le, err := l.Acquire(t.Context(), "hot")
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Error("two holders at once")
				}
				w := time.Since(start)
				counts[g]++
				inside.Add(-1)
				if err := le.Release(t.Context()); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				waits = append(waits, w)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(waits)
	total := len(waits)
	t.Logf("%d handoffs in 1s; shares %v; p50 %v p99 %v max %v", total, counts,
		waits[total/2], waits[total*99/100], waits[total-1])
	for g, n := range counts {
		if n < total/workers/3 {
			t.Errorf("goroutine %d got the key %d times of %d: starved", g, n, total)
		}
	}
	if max := waits[total-1]; max > 5*time.Second {
		t.Errorf("worst wait %v", max)
	}
}

// TestHandoffToLeavingWaiter cancels waiters while the key is being handed
// to them: a key handed to a waiter that left must be freed, not left
// blocked until its TTL.
func TestHandoffToLeavingWaiter(t *testing.T) {
	c := single(t)
	l := newLocker(t, c, lock.Options{TTL: time.Minute})
	ctx := t.Context()
	for i := range 50 {
		le, err := l.Acquire(ctx, "leaving")
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			le2, err := l.Acquire(wctx, "leaving")
			if err == nil {
				err = le2.Release(ctx)
			}
			done <- err
		}()
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		go cancel()
		_ = le.Release(ctx)
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		cancel()
		waitFor(t, func() bool { return c.Exists(ctx, "leaving").Val() == 0 })
	}
}

func TestFencingCounterPerSlot(t *testing.T) {
	c := single(t)
	l, err := redislock.New(c, lock.Options{}, redislock.WithPrefix("p:"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	le, err := l.Acquire(t.Context(), "fence")
	if err != nil {
		t.Fatal(err)
	}
	defer le.Release(t.Context())
	counter := redisslot.CounterKey("p:fence", ":p:haita:fence")
	if v, err := c.Get(t.Context(), counter).Uint64(); err != nil || lock.Token(v) != le.Token() {
		t.Fatalf("counter %q = %d, %v; want the token %d", counter, v, err, le.Token())
	}
}

func TestNilClient(t *testing.T) {
	if _, err := redislock.New(nil, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Fatalf("New(nil) = %v", err)
	}
}

// TestReadmeSnippet checks that the README's lock-contract snippet is the
// body of writeInvoice in example_test.go, which the compiler checks.
func TestReadmeSnippet(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "## The lock contract\n\n```go\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no Go block under \"## The lock contract\"")
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(example), "func writeInvoice(")
	_, body, ok2 = strings.Cut(body, "{\n")
	body, _, ok3 := strings.Cut(body, "\n}\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("example_test.go has no func writeInvoice")
	}
	var want strings.Builder
	for line := range strings.Lines(body + "\n") {
		want.WriteString(strings.TrimPrefix(line, "\t"))
	}
	if block != want.String() {
		t.Errorf("README snippet differs from writeInvoice's body:\n--- README\n%s--- example_test.go\n%s", block, want.String())
	}
}
