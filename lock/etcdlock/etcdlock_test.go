package etcdlock_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/locktest"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// ttl is the conformance suite's short TTL: whole seconds, at the server's
// minimum.
const ttl = 2 * time.Second

func client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func TestConformanceSingleMember(t *testing.T) {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	locktest.Run(t, locktest.Config{
		TTL: ttl,
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return etcdlock.New(cli, opts)
		},
	})
}

// TestConformanceCluster runs the suite on three members while members go
// down and come back between (and during) its subtests: the leader is
// stopped (SIGTERM) as the mutual-exclusion test starts, a follower is
// killed (SIGKILL) for the release, wake-up and cancellation tests, and
// another follower is stopped from the auto-refresh test on, through the
// multi-process test. Timing-bound tests run with followers down only: a
// leader change extends every etcd lease by a TTL.
func TestConformanceCluster(t *testing.T) {
	cluster := testserver.Etcd(t, 3)
	endpoints := cluster.Endpoints()
	cli := client(t, endpoints)
	child := os.Getenv("HAITA_LOCKTEST_CHILD") != ""
	var mu sync.Mutex
	done := map[string]bool{}
	stopped := map[int]bool{}
	// member picks the leader or a follower that is up.
	member := func(t testing.TB, leader bool) int {
		for i, ep := range endpoints {
			if stopped[i] {
				continue
			}
			st, err := cli.Status(t.Context(), ep)
			if err != nil {
				t.Fatalf("status of member %d: %v", i, err)
			}
			if (st.Leader == st.Header.MemberId) == leader {
				return i
			}
		}
		t.Fatalf("no member with leader=%v", leader)
		return -1
	}
	at := func(t testing.TB, subtest, what string, f func(t testing.TB)) {
		mu.Lock()
		defer mu.Unlock()
		if !child && strings.HasSuffix(t.Name(), "/"+subtest) && !done[subtest] {
			done[subtest] = true
			t.Logf("etcd cluster: %s", what)
			f(t)
		}
	}
	var leader, follower int
	locktest.Run(t, locktest.Config{
		TTL: ttl,
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			at(t, "MutualExclusion", "stop the leader", func(t testing.TB) {
				leader = member(t, true)
				cluster.StopMember(leader)
				stopped[leader] = true
			})
			at(t, "TryAcquireHeld", "start the former leader", func(t testing.TB) {
				cluster.StartMember(leader)
				stopped[leader] = false
			})
			at(t, "ReleaseTwice", "kill a follower", func(t testing.TB) {
				follower = member(t, false)
				cluster.KillMember(follower)
				stopped[follower] = true
			})
			at(t, "BadKeys", "start the killed follower", func(t testing.TB) {
				cluster.StartMember(follower)
				stopped[follower] = false
			})
			at(t, "AutoRefresh", "stop a follower until the end", func(t testing.TB) {
				cluster.StopMember(member(t, false))
			})
			return etcdlock.New(cli, opts)
		},
	})
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opts lock.Options
		with []etcdlock.Option
		ok   bool
	}{
		{"zero", lock.Options{}, nil, true},
		{"1s", lock.Options{TTL: time.Second}, nil, true},
		{"5s", lock.Options{TTL: 5 * time.Second}, nil, true},
		{"500ms", lock.Options{TTL: 500 * time.Millisecond}, nil, false},
		{"1500ms", lock.Options{TTL: 1500 * time.Millisecond}, nil, false},
		{"negative", lock.Options{TTL: -time.Second}, nil, false},
		{"prefix", lock.Options{}, []etcdlock.Option{etcdlock.WithPrefix("app/locks/")}, true},
		{"prefix_NUL", lock.Options{}, []etcdlock.Option{etcdlock.WithPrefix("a\x00")}, false},
		{"prefix_bad_UTF8", lock.Options{}, []etcdlock.Option{etcdlock.WithPrefix("\xff")}, false},
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := etcdlock.New(cli, tt.opts, tt.with...)
			if tt.ok != (err == nil) {
				t.Fatalf("New(%+v) = %v, want ok=%v", tt.opts, err, tt.ok)
			}
			if err != nil && !errors.Is(err, lock.ErrInvalidOptions) {
				t.Errorf("error %v does not match ErrInvalidOptions", err)
			}
			if l != nil {
				_ = l.Close()
			}
		})
	}
	if _, err := etcdlock.New(nil, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New(nil) = %v", err)
	}
}

// TestOneClientExcludes takes two leases through one etcd client (and one
// Locker): they must exclude each other. Two concurrency.Mutex built from
// one Session on one prefix do not, which the test logs for contrast.
func TestOneClientExcludes(t *testing.T) {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	a, err := etcdlock.New(cli, lock.Options{Holder: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := etcdlock.New(cli, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	le, err := a.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]lock.Locker{"same Locker": a, "same client": b} {
		_, err := l.TryAcquire(t.Context(), "k")
		var he *lock.HeldError
		if !errors.As(err, &he) || he.Holder != "a" {
			t.Errorf("%s: TryAcquire of a held key = %v, want HeldError by a", name, err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		_, err = l.Acquire(ctx, "k")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Acquire of a held key = %v, want DeadlineExceeded", name, err)
		}
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}

	s, err := concurrency.NewSession(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m1, m2 := concurrency.NewMutex(s, "contrast/"), concurrency.NewMutex(s, "contrast/")
	if err := m1.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	t.Logf("for contrast, a second concurrency.Mutex on the same Session: Lock = %v", m2.Lock(ctx))
}

// TestFIFO queues waiters one after another and checks they are granted in
// that order, each with a greater token.
func TestFIFO(t *testing.T) {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	l, err := etcdlock.New(cli, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	first, err := l.Acquire(t.Context(), "fifo")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	order := make(chan int, n)
	tokens := make([]lock.Token, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			le, err := l.Acquire(t.Context(), "fifo")
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			tokens[i] = le.Token()
			time.Sleep(5 * time.Millisecond)
			if err := le.Release(t.Context()); err != nil {
				t.Error(err)
			}
		})
		// Wait until waiter i is queued: the holder plus i+1 keys.
		for {
			resp, err := cli.Get(t.Context(), etcdlock.DefaultPrefix+"fifo\x00", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count == int64(i+2) {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if err := first.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Errorf("waiter %d granted in place %d", got, want)
		}
		want++
	}
	for i := 1; i < n; i++ {
		if tokens[i] <= tokens[i-1] {
			t.Errorf("token of waiter %d (%d) not greater than waiter %d's (%d)", i, tokens[i], i-1, tokens[i-1])
		}
	}
}

// TestKeysDoNotShareQueues holds "a/b" and takes "a": a key's queue must
// not contain the keys of another key that extends it.
func TestKeysDoNotShareQueues(t *testing.T) {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	l, err := etcdlock.New(cli, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, keys := range [][2]string{{"a/b", "a"}, {"a", "a/b"}, {"ab", "a"}} {
		x, err := l.TryAcquire(t.Context(), keys[0])
		if err != nil {
			t.Fatal(err)
		}
		y, err := l.TryAcquire(t.Context(), keys[1])
		if err != nil {
			t.Errorf("TryAcquire(%q) while %q is held: %v", keys[1], keys[0], err)
		} else if err := y.Release(t.Context()); err != nil {
			t.Error(err)
		}
		if err := x.Release(t.Context()); err != nil {
			t.Error(err)
		}
	}
}

// TestWaiterLeaseKeptAlive waits longer than several TTLs: the waiter's own
// etcd lease must stay alive, or it would lose its place in the queue.
func TestWaiterLeaseKeptAlive(t *testing.T) {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	opts := lock.Options{TTL: 2 * time.Second, AutoRefresh: true}
	a, err := etcdlock.New(cli, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	le, err := a.Acquire(t.Context(), "long")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *lock.Lease, 1)
	go func() {
		le2, err := a.Acquire(t.Context(), "long")
		if err != nil {
			t.Error(err)
		}
		got <- le2
	}()
	time.Sleep(7 * time.Second)
	resp, err := cli.Get(t.Context(), etcdlock.DefaultPrefix+"long\x00", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 2 {
		t.Errorf("queue has %d keys after 3.5 TTLs, want holder and waiter", resp.Count)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if le2 := <-got; le2 != nil {
		if le2.Token() <= le.Token() {
			t.Errorf("token %d not greater than %d", le2.Token(), le.Token())
		}
		if err := le2.Release(t.Context()); err != nil {
			t.Error(err)
		}
	}
}

// TestWaiterLeavingDoesNotGrantNext queues two waiters behind a holder and
// cancels the first: its key's delete must not let the second through while
// the holder still holds the key.
func TestWaiterLeavingDoesNotGrantNext(t *testing.T) {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	l, err := etcdlock.New(cli, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const key = "leaving"
	// queued waits until the queue's length satisfies ok.
	queued := func(ok func(int64) bool) {
		t.Helper()
		for {
			resp, err := cli.Get(t.Context(), etcdlock.DefaultPrefix+key+"\x00", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if ok(resp.Count) {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	is := func(n int64) func(int64) bool { return func(c int64) bool { return c == n } }
	holder, err := l.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(t.Context())
	defer cancel1()
	first := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx1, key)
		first <- err
	}()
	queued(is(2))
	var released sync.Mutex
	releasedYet := false
	second := make(chan error, 1)
	go func() {
		le, err := l.Acquire(t.Context(), key)
		if err == nil {
			released.Lock()
			if !releasedYet {
				err = errors.New("second waiter granted while the holder holds the key")
			}
			released.Unlock()
			_ = le.Release(context.Background())
		}
		second <- err
	}()
	queued(is(3))
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first waiter: %v, want context.Canceled", err)
	}
	// The first waiter's key is gone (the second's too, if it was let
	// through).
	queued(func(c int64) bool { return c <= 2 })
	released.Lock()
	releasedYet = true
	released.Unlock()
	if err := holder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}
