package pglock_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/haita/haita/internal/leaserowtest"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/pglock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// openPool returns a pool on a fresh database (the parent's, in a child
// process) with the lease table created.
func openPool(t testing.TB, table string) *pgxpool.Pool {
	t.Helper()
	dsn := testserver.Postgres(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pglock.CreateTable(t.Context(), pool, table); err != nil {
		t.Fatal(err)
	}
	return pool
}

func TestConformance(t *testing.T) {
	pool := openPool(t, "")
	locktest.Run(t, locktest.Config{
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return pglock.New(pool, opts)
		},
		TTL: confTTL,
	})
}

func TestConformanceDatabaseSQL(t *testing.T) {
	dsn := testserver.Postgres(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := pglock.CreateTableDB(t.Context(), db, "app_locks"); err != nil {
		t.Fatal(err)
	}
	locktest.Run(t, locktest.Config{
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			return pglock.NewDB(db, opts, pglock.WithTable("app_locks"))
		},
		TTL: confTTL,
	})
}

// confTTL is the conformance suite's short TTL: a durable UPDATE can stall
// for a good part of the default 500ms on a loaded machine, and a refresh
// that misses its third of the TTL loses the lease.
const confTTL = time.Second

func TestTableNames(t *testing.T) {
	tests := []struct {
		table string
		ok    bool
	}{
		{"", true},
		{"locks", true},
		{"app.locks", true},
		{"_Locks2", true},
		{"a.b.c", false},
		{"locks; drop table x", false},
		{`lo"cks`, false},
		{"1locks", false},
		{"app.", false},
		{strings.Repeat("x", 58), false},
		{"läcks", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.table), func(t *testing.T) {
			ddl, err := pglock.Schema(tt.table)
			if tt.ok != (err == nil) {
				t.Fatalf("Schema(%q) = %v, want ok=%v", tt.table, err, tt.ok)
			}
			if err != nil && !errors.Is(err, lock.ErrInvalidOptions) {
				t.Errorf("error %v does not match ErrInvalidOptions", err)
			}
			if err == nil && !strings.Contains(ddl, "CREATE TABLE IF NOT EXISTS") {
				t.Errorf("Schema(%q) = %q", tt.table, ddl)
			}
			l, err := pglock.New(&pgxpool.Pool{}, lock.Options{}, pglock.WithTable(tt.table))
			if tt.ok != (err == nil) {
				t.Errorf("New with table %q = %v, want ok=%v", tt.table, err, tt.ok)
			}
			if err == nil {
				_ = l.Close()
			}
		})
	}
}

func TestConstructorErrors(t *testing.T) {
	if _, err := pglock.New(nil, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New(nil) = %v", err)
	}
	if _, err := pglock.NewDB(nil, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("NewDB(nil) = %v", err)
	}
	if _, err := pglock.New(&pgxpool.Pool{}, lock.Options{TTL: -1}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New with negative TTL = %v", err)
	}
}

func TestCreateTableIsIdempotentAndConcurrent(t *testing.T) {
	pool := openPool(t, "")
	if _, err := pool.Exec(t.Context(), "CREATE SCHEMA other"); err != nil {
		t.Fatal(err)
	}
	leaserowtest.CreateTableConcurrent(t, func(ctx context.Context) error {
		return pglock.CreateTable(ctx, pool, "other.locks")
	}, func(opts lock.Options) (lock.Locker, error) {
		return pglock.New(pool, opts, pglock.WithTable("other.locks"))
	})
}

// TestHeldErrorReportsHolder checks that a failed TryAcquire names the
// holder and its expiry, measured by the database clock.
func TestHeldErrorReportsHolder(t *testing.T) {
	pool := openPool(t, "")
	leaserowtest.HeldErrorReportsHolder(t, func(opts lock.Options) (lock.Locker, error) {
		return pglock.New(pool, opts)
	})
}

// TestListenerReconnects kills the Locker's listening connection on the
// server and checks that a waiter is still woken by a release long before
// its poll interval.
func TestListenerReconnects(t *testing.T) {
	pool := openPool(t, "")
	opts := lock.Options{PollInterval: time.Minute}
	holder, err := pglock.New(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	waiter, err := pglock.New(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	for round := range 3 {
		le, err := holder.Acquire(t.Context(), "k")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			le2, err := waiter.Acquire(t.Context(), "k")
			if err == nil {
				err = le2.Release(t.Context())
			}
			got <- err
		}()
		// Wait until the waiter listens, then cut that connection.
		var killed int
		for deadline := time.Now().Add(10 * time.Second); killed == 0 && time.Now().Before(deadline); {
			err := pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`).Scan(&killed)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if killed == 0 {
			t.Fatal("no listening connection found")
		}
		// The waiter's listener reconnects (it wakes its waiters when it
		// does); give it time, then release.
		time.Sleep(500 * time.Millisecond)
		if err := le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("round %d: waiter: %v", round, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: waiter not woken after its listening connection was killed", round)
		}
	}
}

const (
	envChild = "PGLOCK_TEST_CHILD_DSN"
	childKey = "killed-holder"
)

// TestKilledHolder starts a child process that takes a key with
// auto-refresh and is killed with SIGKILL: the key frees itself at the
// lease's expiry and the next holder's token is greater.
func TestKilledHolder(t *testing.T) {
	if dsn := os.Getenv(envChild); dsn != "" {
		killedHolderChild(t, dsn)
		return
	}
	pool := openPool(t, "")
	const ttl = time.Second
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledHolder$", "-test.v")
	cmd.Env = append(os.Environ(), envChild+"="+pool.Config().ConnString())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var token uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "TOKEN "); ok {
			token, err = strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if token == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child printed no token: %v", sc.Err())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	l, err := pglock.New(pool, lock.Options{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The child refreshes its lease: still held after several TTLs.
	time.Sleep(2 * ttl)
	if _, err := l.TryAcquire(t.Context(), childKey); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("TryAcquire while the child holds the key = %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = cmd.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	le, err := l.Acquire(ctx, childKey)
	if err != nil {
		t.Fatalf("key not free after the holder was killed: %v", err)
	}
	t.Logf("key free %v after SIGKILL; tokens %d then %d", time.Since(killed), token, le.Token())
	if uint64(le.Token()) <= token {
		t.Errorf("next holder's token %d is not greater than the killed holder's %d", le.Token(), token)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func killedHolderChild(t *testing.T, dsn string) {
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	l, err := pglock.New(pool, lock.Options{TTL: time.Second, AutoRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.Acquire(t.Context(), childKey)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("TOKEN %d\n", le.Token())
	<-le.Done() // killed before this returns
	t.Fatalf("child's lease ended: %v", le.Err())
}

func newLocker(t testing.TB, pool *pgxpool.Pool, opts lock.Options) lock.Locker {
	t.Helper()
	l, err := pglock.New(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// hotKey is a run of goroutines that each take key again as soon as they let
// it go, until stop.
type hotKey struct {
	mu        sync.Mutex
	grants    atomic.Int64 // grants so far, by every goroutine
	counts    []int        // grants per goroutine
	waits     []time.Duration
	overtakes []int64      // per wait but each goroutine's first: grants to others meanwhile
	tokens    []lock.Token // in the order the leases were granted
	inside    atomic.Int32
}

// run starts workers goroutines on l and returns a function that waits for
// them. Goroutine i is recorded as first+i; pause is slept after each
// release.
func (h *hotKey) run(t *testing.T, l lock.Locker, key string, first, workers int, pause time.Duration, stop time.Time) func() {
	var wg sync.WaitGroup
	h.mu.Lock()
	for len(h.counts) < first+workers {
		h.counts = append(h.counts, 0)
	}
	h.mu.Unlock()
	for i := range workers {
		g := first + i
		wg.Go(func() {
			for time.Now().Before(stop) {
				before := h.grants.Load()
				start := time.Now()
				le, err := l.Acquire(t.Context(), key)
				if err != nil {
					t.Error(err)
					return
				}
				w := time.Since(start)
				if h.inside.Add(1) != 1 {
					t.Error("two holders at once")
				}
				n := h.grants.Add(1)
				h.mu.Lock()
				h.counts[g]++
				h.waits = append(h.waits, w)
				if h.counts[g] > 1 { // the first wait includes the start
					h.overtakes = append(h.overtakes, n-1-before)
				}
				h.tokens = append(h.tokens, le.Token())
				h.mu.Unlock()
				h.inside.Add(-1)
				if err := le.Release(t.Context()); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(pause)
			}
		})
	}
	return wg.Wait
}

func (h *hotKey) log(t *testing.T) {
	waits := slices.Clone(h.waits)
	slices.Sort(waits)
	n := len(waits)
	if n == 0 || len(h.overtakes) == 0 {
		t.Fatal("too few grants")
	}
	over := slices.Clone(h.overtakes)
	slices.Sort(over)
	t.Logf("%d grants; shares %v; wait p50 %v p99 %v max %v; grants to others during one wait: p99 %d max %d",
		n, h.counts, waits[n/2], waits[n*99/100], waits[n-1], over[len(over)*99/100], over[len(over)-1])
}

// TestHotKeyFair runs 8 goroutines of one Locker on one key, each taking it
// again at once after releasing it. The Locker serves them in turn: nobody
// is starved, and while one waits the others get the key at most about once
// each.
func TestHotKeyFair(t *testing.T) {
	pool := openPool(t, "")
	l := newLocker(t, pool, lock.Options{})
	const workers = 8
	var h hotKey
	h.run(t, l, "hot", 0, workers, 0, time.Now().Add(2*time.Second))()
	h.log(t)
	total := len(h.waits)
	for g, n := range h.counts {
		if n < total/workers/3 {
			t.Errorf("goroutine %d got the key %d times of %d: starved", g, n, total)
		}
	}
	// In turn, a waiter sees the 7 others ahead of it get the key. A
	// goroutine descheduled between starting to wait and joining the queue
	// sees more, so the bound on the worst wait is loose.
	over := slices.Clone(h.overtakes)
	slices.Sort(over)
	if p99 := over[len(over)*99/100]; p99 > workers {
		t.Errorf("99th percentile of grants to others during one wait is %d, want at most %d", p99, workers)
	}
	if m := over[len(over)-1]; m > 4*workers {
		t.Errorf("a goroutine waited while others got the key %d times", m)
	}
}

// TestHandoffTokens checks that the tokens of a hot key strictly increase
// when releases hand the key from goroutine to goroutine, and that most
// grants are handoffs: only about one release in maxHandoffs+1 notifies.
func TestHandoffTokens(t *testing.T) {
	pool := openPool(t, "")
	l := newLocker(t, pool, lock.Options{})
	notifies := countNotifications(t, pool, "tokens")
	var h hotKey
	h.run(t, l, "tokens", 0, 8, 0, time.Now().Add(time.Second))()
	h.log(t)
	for i := 1; i < len(h.tokens); i++ {
		if h.tokens[i] <= h.tokens[i-1] {
			t.Fatalf("grant %d has token %d after %d", i, h.tokens[i], h.tokens[i-1])
		}
	}
	n := notifies()
	t.Logf("%d notifications for %d grants", n, len(h.tokens))
	if n > len(h.tokens)/4 {
		t.Errorf("%d notifications for %d grants: releases did not hand the key over", n, len(h.tokens))
	}
}

// countNotifications listens on the default table's channel and returns a
// function that reports how many releases of key were notified so far.
func countNotifications(t *testing.T, pool *pgxpool.Pool, key string) func() int {
	t.Helper()
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "LISTEN "+pglock.DefaultTable); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := conn.Conn().WaitForNotification(ctx)
			if err != nil {
				return
			}
			if m.Payload == key {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = conn.Hijack().Close(context.Background())
	})
	return func() int { return int(n.Load()) }
}

// TestOtherLockerNotStarved runs 8 goroutines of one Locker on a hot key
// and one goroutine of a second Locker, another process as far as the
// database can tell. Handoffs within the first Locker are bounded, so the
// second one gets the key again and again.
func TestOtherLockerNotStarved(t *testing.T) {
	pool := openPool(t, "")
	a := newLocker(t, pool, lock.Options{})
	b := newLocker(t, pool, lock.Options{PollInterval: time.Minute})
	var h hotKey
	stop := time.Now().Add(2 * time.Second)
	waitA := h.run(t, a, "shared", 0, 8, 0, stop)
	waitB := h.run(t, b, "shared", 8, 1, 2*time.Millisecond, stop)
	waitA()
	waitB()
	h.log(t)
	if h.counts[8] < 10 {
		t.Errorf("the second Locker got the key %d times of %d", h.counts[8], len(h.waits))
	}
	for i := 1; i < len(h.tokens); i++ {
		if h.tokens[i] <= h.tokens[i-1] {
			t.Fatalf("grant %d has token %d after %d", i, h.tokens[i], h.tokens[i-1])
		}
	}
}

// TestHandoffToLeavingWaiter cancels waiters while the key is being handed
// to them, or after it was handed to them but before they took it: a key
// handed to a waiter that left must be freed, not left blocked until its
// TTL.
func TestHandoffToLeavingWaiter(t *testing.T) {
	pool := openPool(t, "")
	l := newLocker(t, pool, lock.Options{TTL: time.Minute})
	ctx := t.Context()
	held := func() bool {
		var n int
		err := pool.QueryRow(ctx, "SELECT count(*) FROM haita_locks WHERE key = 'leaving' AND expires_at > now()").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	var got, left int
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
		// The waiter leaves while the release is on its way, or just after
		// the release handed it the key.
		if i%2 == 0 {
			go cancel()
			_ = le.Release(ctx)
		} else {
			_ = le.Release(ctx)
			cancel()
		}
		switch err := <-done; {
		case err == nil:
			got++
		case errors.Is(err, context.Canceled):
			left++
		default:
			t.Fatal(err)
		}
		cancel()
		for deadline := time.Now().Add(5 * time.Second); held(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the key is still held 5s after its waiter left", i)
			}
		}
	}
	t.Logf("%d waiters got the key, %d left", got, left)
}

const envWaiterChild = "PGLOCK_TEST_WAITER_DSN"

// TestKilledWaiter queues a child process's Acquire behind a holder, then a
// waiter of this process behind it, kills the child with SIGKILL and
// releases: the release hands the key to the dead child's queue row, and the
// key must still reach the live waiter once that grant's lease ends, within
// about a TTL.
func TestKilledWaiter(t *testing.T) {
	const key = "killed-waiter"
	const ttl = 2 * time.Second
	if dsn := os.Getenv(envWaiterChild); dsn != "" {
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		l, err := pglock.New(pool, lock.Options{TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = l.Acquire(context.Background(), key) // killed while it waits
		t.Fatal(err)
	}
	pool := openPool(t, "")
	queued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			var c int
			err := pool.QueryRow(t.Context(), "SELECT count(*) FROM haita_locks_wait WHERE key = $1", key).Scan(&c)
			if err != nil {
				t.Fatal(err)
			}
			if c == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d waiters queued, want %d", c, n)
			}
		}
	}
	holder := newLocker(t, pool, lock.Options{TTL: ttl})
	le, err := holder.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWaiter$")
	cmd.Env = append(os.Environ(), envWaiterChild+"="+pool.Config().ConnString())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	queued(1)
	waiter := newLocker(t, pool, lock.Options{TTL: ttl})
	got := make(chan *lock.Lease, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		le2, err := waiter.Acquire(ctx, key)
		if err != nil {
			t.Errorf("live waiter: %v", err)
		}
		got <- le2
	}()
	queued(2)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	released := time.Now()
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	le2 := <-got
	if le2 == nil {
		return
	}
	t.Logf("the live waiter got the key %v after the release to the dead one; tokens %d then %d", time.Since(released), le.Token(), le2.Token())
	if le2.Token() <= le.Token() {
		t.Errorf("token %d not greater than %d", le2.Token(), le.Token())
	}
	if err := le2.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestHandoffAcrossLockers queues waiters of two other Lockers behind a
// holder: each release hands the key to the oldest waiter, in order, without
// a notification on the table's channel (which every Locker listens on); only
// the last release, with nobody waiting, notifies it.
func TestHandoffAcrossLockers(t *testing.T) {
	pool := openPool(t, "")
	const key = "across"
	notifies := countNotifications(t, pool, key)
	a := newLocker(t, pool, lock.Options{})
	b := newLocker(t, pool, lock.Options{})
	c := newLocker(t, pool, lock.Options{})
	queued := func(n int) {
		t.Helper()
		for {
			var got int
			if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM haita_locks_wait WHERE key = $1", key).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got == n {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		name string
		le   *lock.Lease
		err  error
	}
	order := make(chan result, 2)
	for i, l := range []lock.Locker{b, c} {
		go func() {
			le, err := l.Acquire(t.Context(), key)
			order <- result{string(rune('b' + i)), le, err}
		}()
		queued(i + 1)
	}
	if err := le.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	prev := le.Token()
	for _, want := range []string{"b", "c"} {
		r := <-order
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.name != want {
			t.Fatalf("Locker %s got the key before %s", r.name, want)
		}
		if r.le.Token() <= prev {
			t.Errorf("token %d not greater than %d", r.le.Token(), prev)
		}
		prev = r.le.Token()
		if err := r.le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// The last release found nobody waiting and notified the table's
	// channel. Notifications arrive in commit order, so once a marker sent
	// now has arrived every earlier one has too.
	if _, err := pool.Exec(t.Context(), "SELECT pg_notify($1, $2)", pglock.DefaultTable, key); err != nil {
		t.Fatal(err)
	}
	for notifies() < 2 {
		time.Sleep(2 * time.Millisecond)
	}
	if n := notifies() - 1; n != 1 {
		t.Errorf("%d notifications on the table's channel for two handoffs and a release, want 1", n)
	}
}
