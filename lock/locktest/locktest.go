// Package locktest is the conformance suite every haita lock backend runs,
// in the manner of testing/fstest: one call, [Run], runs each test that the
// backend's [lock.Capabilities] make applicable.
//
// The suite proves mutual exclusion with 32 goroutines and, for
// cross-process backends, with 4 OS processes incrementing a counter kept in
// a file; strictly increasing fencing tokens; expiry, refresh and
// auto-refresh; ownership; prompt wake-up, cancellation and wait limits;
// reading a key's holder (Locker.Holder); and clear errors for bad keys and
// options.
//
// Where a test needs a waiter to be waiting before it acts, it waits for
// [lock.Locker.Waiting] to say so ([WaitUntilWaiting]) instead of sleeping,
// so the suite does not flake on a slow machine; suites for other
// contracts synchronise the same way.
//
// The multi-process test re-executes the test binary, running the same
// top-level test function with environment variables that make Run do a
// child's share of the work instead. The test function must therefore reach
// Run the same way in the child: set up servers (internal/testserver reuses
// the parent's in a child) and call Run, with no other subtests before it.
package locktest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// Config describes the backend under test.
type Config struct {
	// New returns a fresh Locker on the backend under test with opts. The
	// suite closes it. It is called many times, also in child processes.
	New func(t testing.TB, opts lock.Options) (lock.Locker, error)

	// TTL is the short TTL the expiry tests use. Zero selects 500ms.
	// Backends with a coarse TTL (etcd: whole seconds) set more.
	TTL time.Duration
}

const (
	envChild = "HAITA_LOCKTEST_CHILD" // the child's task
	envDir   = "HAITA_LOCKTEST_DIR"   // where the shared counter lives
	envKey   = "HAITA_LOCKTEST_KEY"   // the key to contend on
	envOps   = "HAITA_LOCKTEST_OPS"   // increments per child
)

// Goroutines and Processes are the contention the exclusion tests create;
// OpsPerWorker is how many increments each of them makes.
const (
	Goroutines   = 32
	Processes    = 4
	OpsPerWorker = 10
)

// IsChild reports whether this process is a child of the multi-process
// test. Test functions that disturb servers (stopping cluster members, say)
// do so only when IsChild is false.
func IsChild() bool { return os.Getenv(envChild) != "" }

// Run runs the conformance suite against cfg's backend.
func Run(t *testing.T, cfg Config) {
	if cfg.New == nil {
		t.Fatal("locktest: Config.New is nil")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 500 * time.Millisecond
	}
	if os.Getenv(envChild) != "" {
		runChild(t, cfg)
		return
	}
	s := &suite{cfg: cfg, prefix: fmt.Sprintf("locktest/%s/", lock.NewOwner().String()[:12])}
	caps := s.locker(t, lock.Options{}).Capabilities()
	s.caps = caps
	t.Logf("locktest: backend %q capabilities %+v", caps.Name, caps)

	t.Run("MutualExclusion", s.testMutualExclusion)
	t.Run("FencingIncreases", s.testFencing)
	t.Run("TryAcquireHeld", s.testTryAcquireHeld)
	t.Run("ReleaseTwice", s.testReleaseTwice)
	t.Run("WakeOnRelease", s.testWake)
	t.Run("Cancel", s.testCancel)
	t.Run("ContextDeadline", s.testContextDeadline)
	t.Run("WaitLimit", s.testWaitLimit)
	t.Run("BadKeys", s.testBadKeys)
	t.Run("BadOptions", s.testBadOptions)
	t.Run("LeaseContext", s.testLeaseContext)
	t.Run("Close", s.testClose)
	t.Run("Holder", s.testHolder)
	if caps.TTL {
		t.Run("Expiry", s.testExpiry)
		t.Run("Refresh", s.testRefresh)
		t.Run("OwnershipAfterExpiry", s.testOwnershipAfterExpiry)
		t.Run("AutoRefresh", s.testAutoRefresh)
	} else {
		t.Run("NoTTL", s.testNoTTL)
	}
	if caps.CrossProcess {
		t.Run("MultiProcess", s.testMultiProcess)
	}
}

// WaitUntilWaiting blocks until at least n Acquire calls of l wait for key
// (see [lock.Locker.Waiting]), and fails t when that takes more than 30s.
// Tests synchronise on it instead of sleeping "long enough" for a waiter to
// start waiting. It may be called from any goroutine.
func WaitUntilWaiting(t testing.TB, l lock.Locker, key string, n int) {
	deadline := time.Now().Add(30 * time.Second)
	for l.Waiting(key) < n {
		if time.Now().After(deadline) {
			t.Errorf("locktest: %d Acquire calls wait for %q after 30s, want %d", l.Waiting(key), key, n)
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

type suite struct {
	cfg    Config
	caps   lock.Capabilities
	prefix string
}

// key returns a key unique to the running test.
func (s *suite) key(t testing.TB, suffix string) string {
	return s.prefix + t.Name() + "/" + suffix
}

func (s *suite) locker(t testing.TB, opts lock.Options) lock.Locker {
	t.Helper()
	l, err := s.cfg.New(t, opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func (s *suite) ttlOpts() lock.Options {
	if s.caps.TTL {
		return lock.Options{TTL: s.cfg.TTL}
	}
	return lock.Options{}
}

func release(t testing.TB, le *lock.Lease) {
	t.Helper()
	if err := le.Release(context.WithoutCancel(t.Context())); err != nil {
		t.Errorf("Release(%q): %v", le.Key(), err)
	}
}

// counter is a resource outside memory: a file holding "count token" and a
// history of the tokens that wrote, one per line, in commit order.
type counter struct{ dir string }

func (c counter) increment(tok lock.Token, fencing bool) error {
	path := filepath.Join(c.dir, "counter")
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var n, last uint64
	if len(data) > 0 {
		if _, err := fmt.Sscan(string(data), &n, &last); err != nil {
			return fmt.Errorf("counter file %q: %v", data, err)
		}
	}
	// Widen the window between read and write, so that a lock that does not
	// exclude loses updates on the first run.
	time.Sleep(50 * time.Microsecond)
	if fencing && uint64(tok) <= last {
		return fmt.Errorf("token %d is not greater than the last writer's %d", tok, last)
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d %d", n+1, tok)), 0o600); err != nil {
		return err
	}
	h, err := os.OpenFile(filepath.Join(c.dir, "history"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(h, uint64(tok))
	return errors.Join(err, h.Close())
}

// check verifies the final count and that the history's tokens strictly
// increase.
func (c counter) check(t testing.TB, want int, fencing bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, "counter"))
	if err != nil {
		t.Fatalf("read counter: %v", err)
	}
	var n, last uint64
	if _, err := fmt.Sscan(string(data), &n, &last); err != nil {
		t.Fatalf("counter file %q: %v", data, err)
	}
	if n != uint64(want) {
		t.Errorf("counter = %d, want %d: %d increments lost to overlapping holders", n, want, want-int(n))
	}
	hist, err := os.ReadFile(filepath.Join(c.dir, "history"))
	if err != nil {
		t.Fatalf("read history: %v", err)
	}
	lines := strings.Fields(string(hist))
	if len(lines) != want {
		t.Errorf("history has %d entries, want %d", len(lines), want)
	}
	if !fencing {
		return
	}
	var prev uint64
	for i, l := range lines {
		tok, err := strconv.ParseUint(l, 10, 64)
		if err != nil {
			t.Fatalf("history line %d: %v", i, err)
		}
		if tok <= prev {
			t.Errorf("history line %d: token %d after %d: tokens must strictly increase in commit order", i, tok, prev)
			return
		}
		prev = tok
	}
}

// work makes ops increments of c under key, each inside a lease; inside
// counts holders in this process to catch overlap directly.
func work(ctx context.Context, l lock.Locker, key string, c counter, ops int, fencing bool, inside *atomic.Int32) error {
	for range ops {
		le, err := l.Acquire(ctx, key)
		if err != nil {
			return fmt.Errorf("Acquire: %w", err)
		}
		if n := inside.Add(1); n != 1 {
			inside.Add(-1)
			_ = le.Release(ctx)
			return fmt.Errorf("%d holders of %q at once", n, key)
		}
		err = c.increment(le.Token(), fencing)
		inside.Add(-1)
		if rerr := le.Release(ctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("Release: %w", rerr))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *suite) testMutualExclusion(t *testing.T) {
	l := s.locker(t, lock.Options{})
	key := s.key(t, "counter")
	c := counter{dir: t.TempDir()}
	var inside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, Goroutines)
	for range Goroutines {
		wg.Go(func() {
			if err := work(t.Context(), l, key, c, OpsPerWorker, s.caps.Fencing, &inside); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c.check(t, Goroutines*OpsPerWorker, s.caps.Fencing)
}

func (s *suite) testFencing(t *testing.T) {
	if !s.caps.Fencing {
		t.Skip("backend has no fencing tokens")
	}
	a := s.locker(t, lock.Options{})
	b := s.locker(t, lock.Options{})
	key := s.key(t, "k")
	var prev lock.Token
	for i := range 20 {
		l := a
		if i%2 == 1 {
			l = b // tokens increase across Lockers (clients) too
		}
		le, err := l.Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if le.Token() <= prev {
			t.Fatalf("holder %d got token %d after %d", i, le.Token(), prev)
		}
		prev = le.Token()
		release(t, le)
	}
}

func (s *suite) testTryAcquireHeld(t *testing.T) {
	a := s.locker(t, lock.Options{})
	b := s.locker(t, lock.Options{})
	key := s.key(t, "k")
	le, err := a.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("TryAcquire of a free key: %v", err)
	}
	for _, l := range []lock.Locker{a, b} {
		start := time.Now()
		_, err = l.TryAcquire(t.Context(), key)
		if !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("TryAcquire of a held key = %v, want ErrNotAcquired", err)
		}
		var held *lock.HeldError
		if !errors.As(err, &held) || held.Key != key {
			t.Errorf("TryAcquire error %v is not a *lock.HeldError for %q", err, key)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("TryAcquire of a held key took %v: it must not wait", d)
		}
	}
	release(t, le)
	le, err = b.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("TryAcquire after release: %v", err)
	}
	release(t, le)
}

func (s *suite) testReleaseTwice(t *testing.T) {
	l := s.locker(t, lock.Options{})
	key := s.key(t, "k")
	a, err := l.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if a.Err() != nil {
		t.Errorf("Err of a held lease = %v", a.Err())
	}
	release(t, a)
	select {
	case <-a.Done():
	default:
		t.Error("Done not closed after Release")
	}
	if !errors.Is(a.Err(), lock.ErrReleased) {
		t.Errorf("Err after Release = %v, want ErrReleased", a.Err())
	}
	b, err := l.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("second Release = %v, want ErrNotHeld", err)
	}
	if err := a.Refresh(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Refresh after Release = %v, want ErrNotHeld", err)
	}
	if _, err := l.TryAcquire(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Errorf("the old lease's Release freed the new holder's key: TryAcquire = %v", err)
	}
	release(t, b)
}

func (s *suite) testWake(t *testing.T) {
	// A poll interval far above the bound: only a notification (or, for
	// backends without one, their own short poll) wakes the waiter in time.
	poll := 20 * time.Second
	bound := 2 * time.Second
	if !s.caps.Notify {
		poll = 0
	}
	a := s.locker(t, lock.Options{PollInterval: poll})
	b := s.locker(t, lock.Options{PollInterval: poll})
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		w, err := b.Acquire(t.Context(), key)
		if err != nil {
			t.Errorf("waiter: %v", err)
			got <- time.Time{}
			return
		}
		got <- time.Now()
		release(t, w)
	})
	WaitUntilWaiting(t, b, key, 1)
	released := time.Now()
	release(t, le)
	at := <-got
	wg.Wait()
	if at.IsZero() {
		return
	}
	if d := at.Sub(released); d > bound {
		t.Errorf("waiter woke %v after the release; want well below the %v poll interval", d, poll)
	}
}

func (s *suite) testCancel(t *testing.T) {
	a := s.locker(t, lock.Options{})
	b := s.locker(t, lock.Options{})
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		WaitUntilWaiting(t, b, key, 1)
		cancel()
	})
	start := time.Now()
	_, err = b.Acquire(ctx, key)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancelled Acquire returned after %v", d)
	}
	release(t, le)
	// The cancelled waiter left nothing behind that lasts: the key is free
	// long before a TTL. An attempt in flight at the engine when ctx ended
	// may still be granted after Acquire returned; a backend that lets
	// such an attempt finish (lock.Detached) gives the grant back as soon
	// as the engine answers, so the key is free at once or just after that
	// answer, and a waiting Acquire of a gets it. 10s is a third of the
	// default TTL of every backend that has one: a grant left to expire
	// would fail the test.
	fctx, fcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer fcancel()
	le, err = a.Acquire(fctx, key)
	if err != nil {
		t.Fatalf("key not free after the only holder released and the waiter gave up: %v", err)
	}
	release(t, le)
	// An already cancelled context fails at once.
	if _, err := b.Acquire(ctx, s.key(t, "other")); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a done context = %v, want context.Canceled", err)
	}
}

func (s *suite) testContextDeadline(t *testing.T) {
	a := s.locker(t, lock.Options{})
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer release(t, le)
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	_, err = a.Acquire(ctx, key)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, lock.ErrWaitLimit) {
		t.Errorf("Acquire past the context's deadline = %v, want context.DeadlineExceeded", err)
	}
}

func (s *suite) testWaitLimit(t *testing.T) {
	if _, err := s.cfg.New(t, lock.Options{WaitLimit: -time.Second}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("negative WaitLimit: %v, want ErrInvalidOptions", err)
	}
	a := s.locker(t, lock.Options{})
	b := s.locker(t, lock.Options{WaitLimit: 200 * time.Millisecond})
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Acquire(t.Context(), key)
	if !errors.Is(err, lock.ErrWaitLimit) {
		t.Fatalf("Acquire past the wait limit = %v, want ErrWaitLimit", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		t.Errorf("wait limit error %v also matches a context error", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("wait limit of 200ms returned after %v", d)
	}
	release(t, le)
	le, err = b.Acquire(t.Context(), key)
	if err != nil {
		t.Fatalf("Acquire of a free key with a wait limit: %v", err)
	}
	release(t, le)
}

func (s *suite) testBadKeys(t *testing.T) {
	l := s.locker(t, lock.Options{})
	for name, key := range map[string]string{
		"empty":   "",
		"toolong": strings.Repeat("k", lock.MaxKeyLen+1),
		"badutf8": "k\xff",
		"nul":     "k\x00k",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := l.Acquire(t.Context(), key); !errors.Is(err, lock.ErrInvalidKey) {
				t.Errorf("Acquire = %v, want ErrInvalidKey", err)
			}
			if _, err := l.TryAcquire(t.Context(), key); !errors.Is(err, lock.ErrInvalidKey) {
				t.Errorf("TryAcquire = %v, want ErrInvalidKey", err)
			}
		})
	}
	// The longest valid key and non-ASCII keys work.
	for _, key := range []string{s.prefix + strings.Repeat("k", lock.MaxKeyLen-len(s.prefix)), s.prefix + "排他/ключ/🔒", s.prefix + "a b/../c:{d}*?"} {
		le, err := l.TryAcquire(t.Context(), key)
		if err != nil {
			t.Errorf("TryAcquire(%.40q…): %v", key, err)
			continue
		}
		release(t, le)
	}
}

func (s *suite) testBadOptions(t *testing.T) {
	type bad struct {
		name, field string
		opts        lock.Options
	}
	cases := []bad{
		{"negative_TTL", "TTL", lock.Options{TTL: -time.Second}},
		{"negative_WaitLimit", "WaitLimit", lock.Options{WaitLimit: -1}},
		{"negative_PollInterval", "PollInterval", lock.Options{PollInterval: -1}},
		{"negative_Drift", "Drift", lock.Options{Drift: -1}},
	}
	if s.caps.TTL {
		cases = append(cases, bad{"Drift_not_below_TTL", "Drift", lock.Options{TTL: s.cfg.TTL, Drift: s.cfg.TTL}})
	} else {
		cases = append(cases, bad{"TTL_without_TTL_support", "TTL", lock.Options{TTL: time.Second}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := s.cfg.New(t, c.opts)
			if err == nil {
				_ = l.Close()
			}
			if !errors.Is(err, lock.ErrInvalidOptions) {
				t.Errorf("New(%+v) = %v, want ErrInvalidOptions", c.opts, err)
			} else if !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %q does not name the option %s", err, c.field)
			}
		})
	}
}

func (s *suite) testLeaseContext(t *testing.T) {
	l := s.locker(t, lock.Options{})
	le, err := l.Acquire(t.Context(), s.key(t, "k"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := le.Context(t.Context())
	defer cancel()
	if ctx.Err() != nil {
		t.Fatal("lease context done while held")
	}
	release(t, le)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lease context not cancelled by Release")
	}
	if !errors.Is(context.Cause(ctx), lock.ErrReleased) {
		t.Errorf("lease context cause = %v, want ErrReleased", context.Cause(ctx))
	}
}

func (s *suite) testClose(t *testing.T) {
	a := s.locker(t, lock.Options{})
	b, err := s.cfg.New(t, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := b.Acquire(t.Context(), key)
		errc <- err
	}()
	WaitUntilWaiting(t, b, key, 1)
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, lock.ErrClosed) {
			t.Errorf("waiting Acquire after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Acquire")
	}
	if _, err := b.Acquire(t.Context(), key); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	release(t, le)
}

func (s *suite) testNoTTL(t *testing.T) {
	l := s.locker(t, lock.Options{})
	le, err := l.Acquire(t.Context(), s.key(t, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if !le.Expiry().IsZero() {
		t.Errorf("Expiry = %v, want zero for a backend without TTL", le.Expiry())
	}
	if err := le.Refresh(t.Context()); err != nil {
		t.Errorf("Refresh without TTL = %v, want nil", err)
	}
	release(t, le)
}

func (s *suite) testExpiry(t *testing.T) {
	ttl := s.cfg.TTL
	a := s.locker(t, lock.Options{TTL: ttl})
	b := s.locker(t, lock.Options{TTL: ttl})
	key := s.key(t, "k")
	start := time.Now()
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if exp := le.Expiry(); exp.IsZero() || exp.After(start.Add(ttl)) {
		t.Errorf("Expiry %v is not within TTL %v of the acquire", exp.Sub(start), ttl)
	}
	var doneAt time.Time
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-le.Done():
			doneAt = time.Now()
		case <-time.After(ttl + 10*time.Second):
		}
	})
	// Never released: a second client gets the key after the TTL.
	ctx, cancel := context.WithTimeout(t.Context(), ttl+10*time.Second)
	defer cancel()
	next, err := b.Acquire(ctx, key)
	if err != nil {
		t.Fatalf("key not free after its TTL: %v", err)
	}
	grantedAt := time.Now()
	// Whatever Done says at this moment (its timer may lag), Check reads
	// the clock: another holder has the key, so the lease is lost.
	if err := le.Check(); !errors.Is(err, lock.ErrLost) {
		t.Errorf("Check once the next holder has the key = %v, want ErrLost", err)
	}
	wg.Wait()
	if doneAt.IsZero() {
		t.Fatal("Done did not close on expiry")
	}
	if !errors.Is(le.Err(), lock.ErrLost) {
		t.Errorf("Err after expiry = %v, want ErrLost", le.Err())
	}
	// The deadline Done closes at must come before the engine let the next
	// holder in. (The moment the channel was seen closed also carries
	// timer and scheduling delays, which a loaded machine stretches.)
	if le.Expiry().After(grantedAt) {
		t.Errorf("the lease's deadline was %v after the next holder got the key; Done must close before the engine's expiry", le.Expiry().Sub(grantedAt))
	}
	t.Logf("Done seen closed %v before the next holder got the key", grantedAt.Sub(doneAt))
	if d := grantedAt.Sub(start); d > ttl+max(ttl, 2*time.Second) {
		t.Errorf("key free again only after %v with TTL %v", d, ttl)
	}
	if s.caps.Fencing && next.Token() <= le.Token() {
		t.Errorf("token after expiry %d not greater than %d", next.Token(), le.Token())
	}
	release(t, next)
}

func (s *suite) testRefresh(t *testing.T) {
	// At least a second: the lease must outlive sleeps and refreshes
	// that a loaded machine (the race detector, engines beside) can
	// delay by a few hundred milliseconds, more than a short TTL's slack.
	ttl := max(s.cfg.TTL, time.Second)
	a := s.locker(t, lock.Options{TTL: ttl})
	b := s.locker(t, lock.Options{TTL: ttl})
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		time.Sleep(ttl * 6 / 10)
		if err := le.Refresh(t.Context()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	}
	time.Sleep(ttl * 6 / 10) // 2.4 TTLs after the acquire
	if _, err := b.TryAcquire(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("refreshed lease lost its key: TryAcquire = %v", err)
	}
	if le.Err() != nil {
		t.Errorf("refreshed lease Err = %v", le.Err())
	}
	release(t, le)
}

func (s *suite) testOwnershipAfterExpiry(t *testing.T) {
	ttl := s.cfg.TTL
	a := s.locker(t, lock.Options{TTL: ttl})
	b := s.locker(t, lock.Options{TTL: 10 * ttl})
	key := s.key(t, "k")
	old, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ttl+10*time.Second)
	defer cancel()
	cur, err := b.Acquire(ctx, key) // waits for the expiry
	if err != nil {
		t.Fatalf("key not free after its TTL: %v", err)
	}
	if err := old.Refresh(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Refresh of an expired lease = %v, want ErrNotHeld", err)
	}
	if err := old.Release(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Release of an expired lease = %v, want ErrNotHeld", err)
	}
	// ErrReleased follows a successful Release only: this one found the
	// lease lost, and Err keeps saying so.
	if err := old.Err(); !errors.Is(err, lock.ErrLost) || errors.Is(err, lock.ErrReleased) {
		t.Errorf("Err after a Release that returned ErrNotHeld = %v, want ErrLost", err)
	}
	if err := old.Check(); !errors.Is(err, lock.ErrLost) {
		t.Errorf("Check after a Release that returned ErrNotHeld = %v, want ErrLost", err)
	}
	if _, err := a.TryAcquire(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("the expired lease's Release freed the new holder's key: TryAcquire = %v", err)
	}
	if err := cur.Refresh(t.Context()); err != nil {
		t.Errorf("current holder's Refresh = %v", err)
	}
	release(t, cur)
}

func (s *suite) testAutoRefresh(t *testing.T) {
	// At least a second: the lease must outlive sleeps and refreshes
	// that a loaded machine (the race detector, engines beside) can
	// delay by a few hundred milliseconds, more than a short TTL's slack.
	ttl := max(s.cfg.TTL, time.Second)
	a := s.locker(t, lock.Options{TTL: ttl, AutoRefresh: true})
	b := s.locker(t, lock.Options{TTL: ttl})
	key := s.key(t, "k")
	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		time.Sleep(ttl / 4)
		if _, err := b.TryAcquire(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("auto-refreshed lease lost its key after %v: TryAcquire = %v", time.Until(deadline)+3*ttl, err)
		}
	}
	if le.Err() != nil {
		t.Fatalf("auto-refreshed lease Err = %v", le.Err())
	}
	release(t, le)
	le, err = b.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("key not free after releasing an auto-refreshed lease: %v", err)
	}
	release(t, le)
}

func (s *suite) testMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	key := s.key(t, "counter")
	c := counter{dir: t.TempDir()}
	runChildren(t, Processes,
		envChild+"=increment", envDir+"="+c.dir, envKey+"="+key, envOps+"="+strconv.Itoa(OpsPerWorker*2))
	// Each child runs 2 goroutines of OpsPerWorker*2 increments.
	c.check(t, Processes*2*OpsPerWorker*2, s.caps.Fencing)
}

// childCommand returns the command that runs this test binary again as a
// child process of the test that called Run, with env added to its
// environment.
func childCommand(t *testing.T, env ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run="+runPattern(t), "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// runChildren runs n child processes with env and waits for them; a child
// that fails fails t with its output.
func runChildren(t *testing.T, n int, env ...string) {
	var wg sync.WaitGroup
	out := make([][]byte, n)
	errs := make([]error, n)
	for i := range n {
		cmd := childCommand(t, env...)
		wg.Go(func() { out[i], errs[i] = cmd.CombinedOutput() })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("child %d: %v\n%s", i, errs[i], out[i])
		}
	}
}

// runPattern is the -test.run pattern that selects the top-level test (and
// enclosing subtests) that called Run.
func runPattern(t *testing.T) string {
	parts := strings.Split(t.Name(), "/")
	parts = parts[:len(parts)-1] // drop "MultiProcess"
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// runChild does a child process's share of the multi-process test.
func runChild(t *testing.T, cfg Config) {
	ops, err := strconv.Atoi(os.Getenv(envOps))
	if err != nil {
		t.Fatalf("locktest child: %s: %v", envOps, err)
	}
	l, err := cfg.New(t, lock.Options{})
	if err != nil {
		t.Fatalf("locktest child: New: %v", err)
	}
	defer l.Close()
	c := counter{dir: os.Getenv(envDir)}
	key := os.Getenv(envKey)
	var inside atomic.Int32
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := work(t.Context(), l, key, c, ops, l.Capabilities().Fencing, &inside); err != nil {
				t.Errorf("locktest child %d: %v", os.Getpid(), err)
			}
		})
	}
	wg.Wait()
}
