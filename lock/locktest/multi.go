package locktest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// MultiConfig describes a backend's semaphores and reader-writer locks for
// [RunSemaphore] and [RunRWLock].
type MultiConfig struct {
	// NewSemaphore returns a fresh Semaphore with limit permits per key on
	// the backend under test; semaphores it returns share their keys, as
	// clients of one engine do. The suite closes it. Required by
	// RunSemaphore; it is called in child processes too.
	NewSemaphore func(t testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error)

	// NewRWLocker returns a fresh RWLocker on the backend under test.
	// Required by RunRWLock.
	NewRWLocker func(t testing.TB, opts lock.Options) (*lock.RWLocker, error)

	// TTL is the short TTL the expiry tests use. Zero selects 500ms.
	TTL time.Duration
}

// Limit is the number of permits the semaphore suite uses; Readers the
// readers of the reader-writer suite's starvation test.
const (
	Limit   = 3
	Readers = 4
)

const (
	envMultiChild = "HAITA_LOCKTEST_MULTI_CHILD" // "sem-record", "rw-record", "sem-hold", "rw-hold"
	envMultiLog   = "HAITA_LOCKTEST_MULTI_LOG"   // the shared history file
	envMultiProcs = "HAITA_LOCKTEST_MULTI_PROCS" // how many children record
)

// RunSemaphore runs the semaphore suite: never more than [Limit] holders
// (goroutines, and OS processes recording into a shared file for
// cross-process backends), all Limit permits usable at once, fencing tokens
// strictly increasing across permits, a clear error for a disagreeing limit,
// wake-up on release, expiry, and permits of a killed process coming back.
// Like [Run], the multi-process tests re-execute the test binary: call
// RunSemaphore from its own top-level test, with no subtests before it.
func RunSemaphore(t *testing.T, cfg MultiConfig) {
	if cfg.NewSemaphore == nil {
		t.Fatal("locktest: MultiConfig.NewSemaphore is nil")
	}
	m := startMulti(t, cfg, func(m *multi) lock.Capabilities { return m.sem(t, lock.Options{}, Limit).Capabilities() })
	if m == nil {
		return
	}
	t.Run("AtMostLimit", m.testSemAtMost)
	t.Run("AllPermits", m.testSemAllPermits)
	t.Run("TokensIncrease", m.testSemTokens)
	t.Run("LimitMismatch", m.testSemLimitMismatch)
	t.Run("WakeOnRelease", m.testSemWake)
	t.Run("ReleaseTwice", m.testSemReleaseTwice)
	if m.caps.TTL {
		t.Run("Expiry", m.testSemExpiry)
	}
	if m.caps.CrossProcess {
		t.Run("MultiProcess", func(t *testing.T) { m.testRecorded(t, "sem-record") })
		t.Run("KilledHolder", func(t *testing.T) { m.testKilled(t, "sem-hold") })
	}
}

// RunRWLock runs the reader-writer suite: readers overlap, a writer never
// overlaps anyone (goroutines, and OS processes for cross-process
// backends), a writer's token is greater than every earlier lease's, a
// writer waiting behind a continuous stream of readers is granted after at
// most [Readers] more read grants (the reads already under way when it
// queued), and the lease of a killed writer comes back.
func RunRWLock(t *testing.T, cfg MultiConfig) {
	if cfg.NewRWLocker == nil {
		t.Fatal("locktest: MultiConfig.NewRWLocker is nil")
	}
	m := startMulti(t, cfg, func(m *multi) lock.Capabilities { return m.rw(t, lock.Options{}).Capabilities() })
	if m == nil {
		return
	}
	t.Run("ReadersOverlap", m.testRWReadersOverlap)
	t.Run("WriterExcludes", m.testRWWriterExcludes)
	t.Run("NoWriterWithAnyone", m.testRWNoOverlap)
	t.Run("WriterTokenGreatest", m.testRWTokens)
	t.Run("WriterNotStarved", m.testRWNotStarved)
	if m.caps.CrossProcess {
		t.Run("MultiProcess", func(t *testing.T) { m.testRecorded(t, "rw-record") })
		t.Run("KilledWriter", func(t *testing.T) { m.testKilled(t, "rw-hold") })
	}
}

type multi struct {
	cfg    MultiConfig
	caps   lock.Capabilities
	prefix string
}

// startMulti prepares a suite run with cfg's defaults and logs the
// backend's capabilities, which caps reads. In a child process it does the
// child's share instead and returns nil.
func startMulti(t *testing.T, cfg MultiConfig, caps func(*multi) lock.Capabilities) *multi {
	if cfg.TTL == 0 {
		cfg.TTL = 500 * time.Millisecond
	}
	m := &multi{cfg: cfg, prefix: fmt.Sprintf("locktest/%s/", lock.NewOwner().String()[:12])}
	if os.Getenv(envMultiChild) != "" {
		m.child(t)
		return nil
	}
	m.caps = caps(m)
	t.Logf("locktest: backend %q capabilities %+v", m.caps.Name, m.caps)
	return m
}

func (m *multi) key(t testing.TB) string { return m.prefix + t.Name() }

// waitLimit bounds every wait of the suite unless a test sets its own, so
// that a broken backend fails a test instead of hanging it. It is no
// performance bound: 32 Lockers of a polling backend (MySQL) queued on one
// key take turns one poll and one transaction at a time, several seconds
// on a loaded machine for the last of them.
const waitLimit = 60 * time.Second

func (m *multi) sem(t testing.TB, opts lock.Options, limit int) *lock.Semaphore {
	t.Helper()
	if opts.WaitLimit == 0 {
		opts.WaitLimit = waitLimit
	}
	s, err := m.cfg.NewSemaphore(t, opts, limit)
	if err != nil {
		t.Fatalf("NewSemaphore(%+v, %d): %v", opts, limit, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (m *multi) rw(t testing.TB, opts lock.Options) *lock.RWLocker {
	t.Helper()
	if opts.WaitLimit == 0 {
		opts.WaitLimit = waitLimit
	}
	l, err := m.cfg.NewRWLocker(t, opts)
	if err != nil {
		t.Fatalf("NewRWLocker(%+v): %v", opts, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// gauge counts holders and keeps the greatest count seen.
type gauge struct{ n, peak atomic.Int32 }

func (g *gauge) enter() int32 {
	n := g.n.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	return n
}

func (g *gauge) leave() { g.n.Add(-1) }

func (m *multi) testSemAtMost(t *testing.T) {
	key := m.key(t)
	var in gauge
	var over atomic.Int32 // grants that made more than Limit holders
	var wg sync.WaitGroup
	for i := range Goroutines {
		s := m.sem(t, lock.Options{}, Limit)
		wg.Go(func() {
			for range OpsPerWorker {
				le, err := s.Acquire(t.Context(), key)
				if err != nil {
					t.Errorf("goroutine %d: Acquire: %v", i, err)
					return
				}
				if in.enter() > Limit {
					over.Add(1)
				}
				time.Sleep(100 * time.Microsecond) // widen the window for overlap
				in.leave()
				release(t, le)
			}
		})
	}
	wg.Wait()
	if n := over.Load(); n > 0 {
		t.Errorf("%d grants made more than %d holders, up to %d at once", n, Limit, in.peak.Load())
	}
	t.Logf("at most %d holders seen at once (limit %d)", in.peak.Load(), Limit)
}

func (m *multi) testSemAllPermits(t *testing.T) {
	key := m.key(t)
	a, b := m.sem(t, lock.Options{}, Limit), m.sem(t, lock.Options{}, Limit)
	var leases []*lock.Lease
	for i := range Limit {
		s := a
		if i%2 == 1 {
			s = b
		}
		le, err := s.TryAcquire(t.Context(), key)
		if err != nil {
			t.Fatalf("TryAcquire of permit %d of %d: %v", i+1, Limit, err)
		}
		leases = append(leases, le)
	}
	if _, err := b.TryAcquire(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Errorf("TryAcquire with all %d permits held = %v, want ErrNotAcquired", Limit, err)
	}
	for _, le := range leases {
		release(t, le)
	}
	le, err := a.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("TryAcquire after releasing every permit: %v", err)
	}
	release(t, le)
}

func (m *multi) testSemTokens(t *testing.T) {
	if !m.caps.Fencing {
		t.Skip("backend has no fencing tokens")
	}
	key := m.key(t)
	a, b := m.sem(t, lock.Options{}, Limit), m.sem(t, lock.Options{}, Limit)
	var held []*lock.Lease
	var prev lock.Token
	for i := range 4 * Limit {
		s := a
		if i%2 == 1 {
			s = b
		}
		if len(held) == Limit { // free the oldest permit; the others stay held
			release(t, held[0])
			held = held[1:]
		}
		le, err := s.Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if le.Token() <= prev {
			t.Fatalf("permit %d got token %d after %d: tokens must increase across permits", i, le.Token(), prev)
		}
		prev = le.Token()
		held = append(held, le)
	}
	for _, le := range held {
		release(t, le)
	}
}

func (m *multi) testSemLimitMismatch(t *testing.T) {
	key := m.key(t)
	a, b := m.sem(t, lock.Options{}, Limit), m.sem(t, lock.Options{}, Limit+1)
	le, err := a.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(context.Context, string) (*lock.Lease, error){"TryAcquire": b.TryAcquire, "Acquire": b.Acquire} {
		got, err := f(t.Context(), key)
		var le *lock.LimitError
		if !errors.Is(err, lock.ErrLimitMismatch) || !errors.As(err, &le) || le.Have != Limit || le.Want != Limit+1 {
			t.Errorf("%s with limit %d of a key in use with %d = %v, want a *lock.LimitError", name, Limit+1, Limit, err)
		}
		if got != nil {
			_ = got.Release(context.WithoutCancel(t.Context()))
		}
	}
	// Nothing was taken: all but one permit are still free for a.
	for range Limit - 1 {
		x, err := a.TryAcquire(t.Context(), key)
		if err != nil {
			t.Fatalf("a disagreeing client took a permit: %v", err)
		}
		defer release(t, x)
	}
	release(t, le)
}

func (m *multi) testSemWake(t *testing.T) {
	key := m.key(t)
	a, b := m.sem(t, lock.Options{}, Limit), m.sem(t, lock.Options{}, Limit)
	var held []*lock.Lease
	for range Limit {
		le, err := a.Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, le)
	}
	got := make(chan error, 1)
	go func() {
		le, err := b.Acquire(t.Context(), key)
		if err == nil {
			release(t, le)
		}
		got <- err
	}()
	waitQueued(t, b, key, got, "a permit beyond the limit")
	release(t, held[0])
	if err := <-got; err != nil {
		t.Errorf("waiter after a release: %v", err)
	}
	for _, le := range held[1:] {
		release(t, le)
	}
}

// waitQueued waits until l has a waiting Acquire for key, like
// [WaitUntilWaiting]; when that Acquire's result arrives on res first, it
// fails t (what must wait did not) and puts the result back.
func waitQueued(t *testing.T, l lock.Locker, key string, res chan error, what string) {
	deadline := time.Now().Add(30 * time.Second)
	for l.Waiting(key) < 1 {
		select {
		case err := <-res:
			t.Errorf("%s was granted without waiting (%v)", what, err)
			res <- err
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Acquire waits for %q after 30s", key)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (m *multi) testSemReleaseTwice(t *testing.T) {
	s := m.sem(t, lock.Options{}, Limit)
	le, err := s.Acquire(t.Context(), m.key(t))
	if err != nil {
		t.Fatal(err)
	}
	release(t, le)
	if err := le.Release(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("second Release = %v, want ErrNotHeld", err)
	}
}

func (m *multi) testSemExpiry(t *testing.T) {
	key := m.key(t)
	a := m.sem(t, lock.Options{TTL: m.cfg.TTL}, Limit)
	b := m.sem(t, lock.Options{TTL: m.cfg.TTL}, Limit)
	var held []*lock.Lease
	for range Limit {
		le, err := a.Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, le)
	}
	b = m.sem(t, lock.Options{TTL: m.cfg.TTL, WaitLimit: 10*m.cfg.TTL + 2*time.Second}, Limit)
	le, err := b.Acquire(t.Context(), key) // granted when the first permit expires
	if err != nil {
		t.Fatalf("Acquire after the permits' TTL: %v", err)
	}
	release(t, le)
	for _, h := range held {
		<-h.Done()
		if err := h.Release(t.Context()); !errors.Is(err, lock.ErrNotHeld) && err != nil {
			t.Errorf("Release of an expired permit = %v", err)
		}
	}
}

func (m *multi) testRWReadersOverlap(t *testing.T) {
	key := m.key(t)
	a, b := m.rw(t, lock.Options{}), m.rw(t, lock.Options{})
	r1, err := a.TryAcquireRead(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.TryAcquireRead(t.Context(), key)
	if err != nil {
		t.Fatalf("second reader while one reads: %v", err)
	}
	r3, err := a.AcquireRead(t.Context(), key)
	if err != nil {
		t.Fatalf("third reader while two read: %v", err)
	}
	release(t, r1)
	release(t, r2)
	release(t, r3)
}

func (m *multi) testRWWriterExcludes(t *testing.T) {
	key := m.key(t)
	a, b := m.rw(t, lock.Options{}), m.rw(t, lock.Options{})
	r, err := a.TryAcquireRead(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryAcquireWrite(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Errorf("writer while a reader reads = %v, want ErrNotAcquired", err)
	}
	release(t, r)
	w, err := b.TryAcquireWrite(t.Context(), key)
	if err != nil {
		t.Fatalf("writer of a free key: %v", err)
	}
	if _, err := a.TryAcquireRead(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Errorf("reader while a writer writes = %v, want ErrNotAcquired", err)
	}
	if _, err := a.TryAcquireWrite(t.Context(), key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Errorf("second writer = %v, want ErrNotAcquired", err)
	}
	release(t, w)
}

func (m *multi) testRWNoOverlap(t *testing.T) {
	key := m.key(t)
	var readers, writers, bad atomic.Int32
	var wg sync.WaitGroup
	for i := range Goroutines {
		l := m.rw(t, lock.Options{})
		wg.Go(func() {
			for op := range OpsPerWorker {
				write := (i+op)%4 == 0
				acq := l.AcquireRead
				if write {
					acq = l.AcquireWrite
				}
				le, err := acq(t.Context(), key)
				if err != nil {
					t.Errorf("goroutine %d: %v", i, err)
					return
				}
				if write {
					if w := writers.Add(1); w != 1 || readers.Load() != 0 {
						bad.Add(1)
					}
				} else if readers.Add(1); writers.Load() != 0 {
					bad.Add(1)
				}
				time.Sleep(100 * time.Microsecond) // widen the window for overlap
				if write {
					writers.Add(-1)
				} else {
					readers.Add(-1)
				}
				release(t, le)
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d grants overlapped a writer with someone else", n)
	}
}

func (m *multi) testRWTokens(t *testing.T) {
	if !m.caps.Fencing {
		t.Skip("backend has no fencing tokens")
	}
	key := m.key(t)
	a, b := m.rw(t, lock.Options{}), m.rw(t, lock.Options{})
	var prev lock.Token
	for round := range 4 {
		var top lock.Token
		var rs []*lock.Lease
		for i := range 3 {
			l := a
			if i%2 == 1 {
				l = b
			}
			r, err := l.AcquireRead(t.Context(), key)
			if err != nil {
				t.Fatal(err)
			}
			if r.Token() <= prev {
				t.Errorf("round %d: reader token %d not above the last writer's %d", round, r.Token(), prev)
			}
			top = r.Token()
			rs = append(rs, r)
		}
		for _, r := range rs {
			release(t, r)
		}
		w, err := b.AcquireWrite(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if w.Token() <= top {
			t.Errorf("round %d: writer token %d not above every earlier reader's (%d)", round, w.Token(), top)
		}
		prev = w.Token()
		release(t, w)
	}
}

// testRWNotStarved runs Readers readers that always overlap: each takes a
// new read lease before it lets go of its old one, so that the key is never
// free of readers unless a reader is refused. A writer then waits. With
// writer preference the readers' new leases are refused once the writer
// queued, they let go, and the writer is granted after at most Readers more
// read grants (those under way when it queued); a reader-preferring lock
// starves it, and the test fails after 50 times that many.
func (m *multi) testRWNotStarved(t *testing.T) {
	key := m.key(t)
	w := m.rw(t, lock.Options{})
	var queued atomic.Bool
	var refused atomic.Bool // a reader was refused: the writer waits
	var after atomic.Int32  // read grants after the writer queued
	granted := make(chan struct{})
	var wg sync.WaitGroup
	ready := make(chan struct{}, Readers)
	for i := range Readers {
		l := m.rw(t, lock.Options{})
		wg.Go(func() {
			le, err := l.AcquireRead(t.Context(), key)
			if err != nil {
				t.Errorf("reader %d: %v", i, err)
				return
			}
			ready <- struct{}{}
			for {
				select {
				case <-granted:
					release(t, le)
					return
				default:
				}
				next, err := l.TryAcquireRead(t.Context(), key)
				if err != nil && !errors.Is(err, lock.ErrNotAcquired) {
					t.Errorf("reader %d: %v", i, err)
					release(t, le)
					return
				}
				if err != nil {
					refused.Store(true) // before this reader lets go
				}
				if queued.Load() && err == nil && after.Add(1) > 50*Readers {
					t.Errorf("a writer waits behind %d read grants made after it queued: readers starve it", after.Load())
					release(t, next)
					release(t, le)
					return
				}
				release(t, le)
				if err != nil { // refused: a writer waits; queue behind it
					if next, err = l.AcquireRead(t.Context(), key); err != nil {
						t.Errorf("reader %d: %v", i, err)
						return
					}
				}
				le = next
			}
		})
	}
	for range Readers {
		<-ready
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		le, err := w.AcquireWrite(ctx, key)
		if err == nil {
			close(granted)
			release(t, le)
		}
		res <- err
	}()
	// Readers hold the key all along, until one is refused because the
	// writer waits; then they all let go at once, and the writer may be
	// granted before its wait is seen here. A writer granted with no
	// reader refused overlapped them.
	for deadline := time.Now().Add(30 * time.Second); w.Writer().Waiting(key) < 1 && !refused.Load(); {
		select {
		case err := <-res:
			if !refused.Load() {
				t.Errorf("a writer while readers hold the key was granted without waiting (%v)", err)
			}
			res <- err
		default:
			if time.Now().After(deadline) {
				t.Fatalf("no writer waits for %q after 30s", key)
			}
			time.Sleep(100 * time.Microsecond)
			continue
		}
		break
	}
	queued.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case err := <-res:
		if err != nil {
			t.Errorf("writer: %v", err)
		}
		<-done
	case <-done: // the readers gave up: the writer starved
		cancel()
		<-res
		return
	}
	if n := after.Load(); n > Readers {
		t.Errorf("the writer was granted after %d read grants made after it queued, want at most %d", n, Readers)
	}
}

// testRecorded runs Processes child processes whose holders record every
// grant and release in one shared file (appends of one line are atomic),
// and checks the history: never more than Limit permits, never a writer
// with anyone. A holder records after it is granted and before it
// releases, so the history's intervals lie inside the real ones and any
// overlap it shows was real.
func (m *multi) testRecorded(t *testing.T, task string) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	logPath := filepath.Join(t.TempDir(), "history")
	key := m.key(t)
	m.children(t, task, key, logPath, Processes)
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var permits, readers, writers, peak, n int
	for l := range strings.Lines(string(data)) {
		if strings.HasPrefix(l, "ready ") {
			continue
		}
		n++
		switch strings.Fields(l)[0] {
		case "S+":
			permits++
		case "S-":
			permits--
		case "R+":
			readers++
		case "R-":
			readers--
		case "W+":
			writers++
		case "W-":
			writers--
		}
		peak = max(peak, permits)
		if permits > Limit {
			t.Fatalf("history line %d: %d holders of a semaphore with %d permits", n, permits, Limit)
		}
		if writers > 1 || writers == 1 && readers > 0 {
			t.Fatalf("history line %d: %d writers with %d readers", n, writers, readers)
		}
	}
	if want := Processes * 2 * OpsPerWorker * 2 * 2; n != want {
		t.Errorf("history has %d lines, want %d", n, want)
	}
	if task == "sem-record" {
		t.Logf("at most %d holders across processes (limit %d)", peak, Limit)
	}
}

// testKilled starts a child that takes every permit (or the write lease)
// with a short TTL and auto-refresh, and SIGKILLs it once it says so: the
// permits come back, at the engine's expiry or when the OS frees them.
func (m *multi) testKilled(t *testing.T, task string) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	key := m.key(t)
	cmd := childCommand(t, envMultiChild+"="+task, envKey+"="+key)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), "HELD") {
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	opts := lock.Options{TTL: m.cfg.TTL, WaitLimit: 30 * time.Second}
	if !m.caps.TTL {
		opts.TTL = 0
	}
	var le *lock.Lease
	if task == "sem-hold" {
		s := m.sem(t, opts, Limit)
		early, err := s.TryAcquire(t.Context(), key)
		if err == nil {
			release(t, early)
		}
		if !errors.Is(err, lock.ErrNotAcquired) && m.caps.TTL {
			t.Errorf("TryAcquire right after the holder died = %v, want ErrNotAcquired (its permits live a TTL)", err)
		}
		le, err = s.Acquire(t.Context(), key)
	} else {
		le, err = m.rw(t, opts).AcquireWrite(t.Context(), key)
	}
	if err != nil {
		t.Fatalf("the killed holder's lease did not come back: %v", err)
	}
	release(t, le)
}

// children runs n child processes of task on key and waits for them.
func (m *multi) children(t *testing.T, task, key, logPath string, n int) {
	runChildren(t, n, envMultiChild+"="+task, envKey+"="+key, envMultiLog+"="+logPath,
		envOps+"="+strconv.Itoa(OpsPerWorker*2), envMultiProcs+"="+strconv.Itoa(n))
}

// child does a child process's share of a multi-process test.
func (m *multi) child(t *testing.T) {
	key := os.Getenv(envKey)
	task := os.Getenv(envMultiChild)
	ttl := lock.Options{TTL: m.cfg.TTL, AutoRefresh: true}
	switch task {
	case "sem-hold":
		s, err := m.cfg.NewSemaphore(t, ttl, Limit)
		if err != nil {
			s, err = m.cfg.NewSemaphore(t, lock.Options{}, Limit) // a backend without TTL
		}
		if err != nil {
			t.Fatal(err)
		}
		for range Limit {
			if _, err := s.Acquire(t.Context(), key); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Println("HELD")
		<-t.Context().Done() // until killed
		return
	case "rw-hold":
		l, err := m.cfg.NewRWLocker(t, ttl)
		if err != nil {
			l, err = m.cfg.NewRWLocker(t, lock.Options{})
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.AcquireWrite(t.Context(), key); err != nil {
			t.Fatal(err)
		}
		fmt.Println("HELD")
		<-t.Context().Done()
		return
	}
	ops, err := strconv.Atoi(os.Getenv(envOps))
	if err != nil {
		t.Fatalf("locktest child: %s: %v", envOps, err)
	}
	logf, err := os.OpenFile(os.Getenv(envMultiLog), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	record := func(s string, tok lock.Token) {
		if _, err := fmt.Fprintf(logf, "%s %d %d\n", s, tok, os.Getpid()); err != nil {
			t.Error(err)
		}
	}
	// Start together, so that the children's holders overlap: wait until
	// every child has said it is ready.
	if _, err := fmt.Fprintf(logf, "ready %d\n", os.Getpid()); err != nil {
		t.Fatal(err)
	}
	procs, _ := strconv.Atoi(os.Getenv(envMultiProcs))
	for {
		data, err := os.ReadFile(os.Getenv(envMultiLog))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(data), "ready ") >= procs {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var acquire [2]func(context.Context, string) (*lock.Lease, error)
	var marks [2]string
	if task == "sem-record" {
		s, err := m.cfg.NewSemaphore(t, lock.Options{}, Limit)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		acquire, marks = [2]func(context.Context, string) (*lock.Lease, error){s.Acquire, s.Acquire}, [2]string{"S", "S"}
	} else {
		l, err := m.cfg.NewRWLocker(t, lock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		acquire, marks = [2]func(context.Context, string) (*lock.Lease, error){l.AcquireRead, l.AcquireWrite}, [2]string{"R", "W"}
	}
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for op := range ops {
				kind := 0
				if (g+op)%4 == 0 {
					kind = 1
				}
				le, err := acquire[kind](t.Context(), key)
				if err != nil {
					t.Errorf("locktest child %d: %v", os.Getpid(), err)
					return
				}
				record(marks[kind]+"+", le.Token())
				time.Sleep(200 * time.Microsecond) // widen the window for overlap
				record(marks[kind]+"-", le.Token())
				if err := le.Release(t.Context()); err != nil {
					t.Errorf("locktest child %d: Release: %v", os.Getpid(), err)
				}
			}
		})
	}
	wg.Wait()
}
