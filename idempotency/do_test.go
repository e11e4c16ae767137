package idempotency_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/idempotency"
)

func newRunner(t testing.TB, s idempotency.Store, opts idempotency.Options) *idempotency.Runner {
	t.Helper()
	r, err := idempotency.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// gate lets goroutines wait until a condition over counters holds; every
// change of a counter wakes the waiters.
type gate struct {
	mu   sync.Mutex
	cond *sync.Cond
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) change(fn func()) {
	g.mu.Lock()
	fn()
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) wait(ok func() bool) {
	g.mu.Lock()
	for !ok() {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// TestConcurrentFirstCalls starts N first calls with one key at once. The
// execution that runs holds until every other caller has returned, so all of
// them meet it in flight: exactly one execution, N-1 ErrInFlight.
func TestConcurrentFirstCalls(t *testing.T) {
	const n = 16
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{Lease: 10 * time.Second})
		g := newGate()
		var execs, returned int
		start := make(chan struct{})
		results := make([]idempotency.Result, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				ran := false
				results[i], errs[i] = r.Do(t.Context(), "order-1", "fp", func(ctx context.Context, c idempotency.Claim) ([]byte, error) {
					ran = true
					g.change(func() { execs++ })
					// Hold the claim until everyone else has returned (or, if
					// the protection is broken, is executing too).
					g.wait(func() bool { return execs+returned >= n })
					return []byte("created order 1"), nil
				})
				if !ran {
					g.change(func() { returned++ })
				}
			})
		}
		close(start)
		wg.Wait()
		if execs != 1 {
			t.Fatalf("%d executions; want exactly 1", execs)
		}
		var ran, inflight int
		for i := range n {
			var ife *idempotency.InFlightError
			switch {
			case errs[i] == nil && !results[i].Replayed:
				ran++
				if string(results[i].Value) != "created order 1" || results[i].Token != 1 {
					t.Errorf("execution's result %+v", results[i])
				}
			case errors.As(errs[i], &ife) && errors.Is(errs[i], idempotency.ErrInFlight):
				inflight++
				if ife.Key != "order-1" || ife.Token != 1 {
					t.Errorf("in-flight error %+v", ife)
				}
			default:
				t.Errorf("caller %d: %+v, %v; want ErrInFlight", i, results[i], errs[i])
			}
		}
		if ran != 1 || inflight != n-1 {
			t.Errorf("%d ran, %d in flight; want 1 and %d", ran, inflight, n-1)
		}
		// Every later caller gets the stored outcome.
		res, err := r.Do(t.Context(), "order-1", "fp", func(context.Context, idempotency.Claim) ([]byte, error) {
			t.Error("ran again after completion")
			return nil, nil
		})
		if err != nil || !res.Replayed || string(res.Value) != "created order 1" {
			t.Errorf("later call: %+v, %v", res, err)
		}
	})
}

// TestConcurrentWaiters: N callers with DoWait; one runs, all get its value.
func TestConcurrentWaiters(t *testing.T) {
	const n = 12
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{Lease: 10 * time.Second, PollInterval: 5 * time.Millisecond})
		var execs atomic.Int32
		start := make(chan struct{})
		var wg sync.WaitGroup
		var replays atomic.Int32
		for range n {
			wg.Go(func() {
				<-start
				res, err := r.DoWait(t.Context(), "job-7", "fp", func(ctx context.Context, c idempotency.Claim) ([]byte, error) {
					return fmt.Appendf(nil, "run %d", execs.Add(1)), nil
				})
				if err != nil || string(res.Value) != "run 1" {
					t.Errorf("DoWait: %q, %v; want run 1", res.Value, err)
				}
				if res.Replayed {
					replays.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if execs.Load() != 1 || replays.Load() != n-1 {
			t.Errorf("%d executions, %d replays; want 1 and %d", execs.Load(), replays.Load(), n-1)
		}
	})
}

func TestReplayIsByteIdentical(t *testing.T) {
	value := []byte{0, 1, 2, 0xff, 0xfe, '"', '\\', 0, '\n', 0x80}
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{})
		first, err := r.Do(t.Context(), "k", "fp", func(context.Context, idempotency.Claim) ([]byte, error) { return value, nil })
		if err != nil || first.Replayed {
			t.Fatalf("first: %+v, %v", first, err)
		}
		for range 2 {
			res, err := r.Do(t.Context(), "k", "fp", func(context.Context, idempotency.Claim) ([]byte, error) {
				t.Error("ran twice")
				return nil, nil
			})
			if err != nil || !res.Replayed || !bytes.Equal(res.Value, value) || res.Token != 1 {
				t.Fatalf("replay: %+v, %v; want %q", res, err, value)
			}
		}
		// An empty value is stored and replayed as empty.
		if _, err := r.Do(t.Context(), "empty", "", func(context.Context, idempotency.Claim) ([]byte, error) { return nil, nil }); err != nil {
			t.Fatal(err)
		}
		res, err := r.Do(t.Context(), "empty", "", nil)
		if err != nil || !res.Replayed || len(res.Value) != 0 {
			t.Fatalf("empty replay: %+v, %v", res, err)
		}
	})
}

func TestMismatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{})
		held := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error)
		go func() {
			_, err := r.Do(t.Context(), "pay-1", "amount=10", func(context.Context, idempotency.Claim) ([]byte, error) {
				close(held)
				<-release
				return []byte("paid 10"), nil
			})
			done <- err
		}()
		<-held
		// In flight with another fingerprint: a mismatch, not "in flight".
		_, err := r.Do(t.Context(), "pay-1", "amount=99", nil)
		var me *idempotency.MismatchError
		if !errors.As(err, &me) || !errors.Is(err, idempotency.ErrMismatch) || me.Stored != "amount=10" || me.Given != "amount=99" {
			t.Errorf("in flight, other fingerprint: %v", err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		_, err = r.Do(t.Context(), "pay-1", "amount=99", nil)
		if !errors.Is(err, idempotency.ErrMismatch) {
			t.Errorf("done, other fingerprint: %v", err)
		}
	})
}

func TestErrorReleasesTheKey(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{})
		boom := errors.New("card declined")
		_, err := r.Do(t.Context(), "k", "fp", func(context.Context, idempotency.Claim) ([]byte, error) { return nil, boom })
		if err != boom {
			t.Fatalf("Do = %v; want fn's error unchanged", err)
		}
		res, err := r.Do(t.Context(), "k", "fp", func(_ context.Context, c idempotency.Claim) ([]byte, error) {
			return fmt.Appendf(nil, "token %d", c.Token), nil
		})
		if err != nil || res.Replayed || string(res.Value) != "token 2" {
			t.Fatalf("retry after error: %+v, %v; want a new execution with token 2", res, err)
		}
	})
}

func TestRetention(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t)
		r := newRunner(t, s, idempotency.Options{Retention: 200 * time.Millisecond})
		runs := 0
		fn := func(context.Context, idempotency.Claim) ([]byte, error) { runs++; return []byte("v"), nil }
		if _, err := r.Do(t.Context(), "k", "fp", fn); err != nil {
			t.Fatal(err)
		}
		// Until the retention passes, the outcome is replayed; after it, the
		// key runs again. Poll for that event.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		for runs < 2 {
			if ctx.Err() != nil {
				t.Fatal("the outcome was never dropped after its retention")
			}
			if _, err := r.Do(ctx, "k", "fp", fn); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // poll interval, not an assertion
		}
		if sq, ok := s.(*idempotency.SQLStore); ok {
			for {
				n, err := sq.Purge(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n > 0 {
					break
				}
				if ctx.Err() != nil {
					t.Fatal("Purge never deleted the expired outcome")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
}

func TestInvalidInput(t *testing.T) {
	s := storeKinds[2].open(t) // SQLite: no server needed
	r := newRunner(t, s, idempotency.Options{})
	for _, tc := range []struct{ name, key, fp string }{
		{"empty key", "", "fp"},
		{"long key", strings.Repeat("k", idempotency.MaxKeyLen+1), "fp"},
		{"invalid UTF-8", "\xff", "fp"},
		{"NUL", "a\x00b", "fp"},
		{"long fingerprint", "k", strings.Repeat("f", idempotency.MaxKeyLen+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Do(t.Context(), tc.key, tc.fp, func(context.Context, idempotency.Claim) ([]byte, error) {
				t.Error("ran with an invalid key")
				return nil, nil
			})
			if !errors.Is(err, idempotency.ErrInvalidKey) {
				t.Errorf("Do = %v; want ErrInvalidKey", err)
			}
		})
	}
	for _, o := range []idempotency.Options{{Lease: -1}, {Lease: time.Millisecond}, {Retention: -1}, {PollInterval: -1}} {
		if _, err := idempotency.New(s, o); !errors.Is(err, idempotency.ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v; want ErrInvalidOptions", o, err)
		}
	}
	if _, err := idempotency.New(nil, idempotency.Options{}); !errors.Is(err, idempotency.ErrInvalidOptions) {
		t.Errorf("New(nil) = %v", err)
	}
}

// TestPanicReleasesTheKey: a panicking fn frees its key and stops extending
// its claim; the panic reaches the caller.
func TestPanicReleasesTheKey(t *testing.T) {
	r := newRunner(t, storeKinds[2].open(t), idempotency.Options{})
	func() {
		defer func() {
			if recover() != "boom" {
				t.Error("the panic did not reach the caller")
			}
		}()
		_, _ = r.Do(t.Context(), "p", "fp", func(context.Context, idempotency.Claim) ([]byte, error) { panic("boom") })
	}()
	res, err := r.Do(t.Context(), "p", "fp", func(_ context.Context, c idempotency.Claim) ([]byte, error) { return []byte("ok"), nil })
	if err != nil || res.Replayed || res.Token != 2 {
		t.Fatalf("after the panic: %+v, %v; want a new execution with token 2", res, err)
	}
}

// extendCounter counts successful Extend calls and signals each one.
type extendCounter struct {
	idempotency.Store
	extended chan struct{}
}

func (s *extendCounter) Extend(ctx context.Context, key, owner string, token uint64, lease time.Duration) error {
	err := s.Store.Extend(ctx, key, owner, token, lease)
	if err == nil {
		select {
		case s.extended <- struct{}{}:
		default:
		}
	}
	return err
}

// TestLeaseIsExtended: an operation that runs for several leases keeps its
// claim, because the Runner extends it, while a second caller waits with
// DoWait (and would take the key over if the lease lapsed). The second
// caller gets the first one's outcome.
func TestLeaseIsExtended(t *testing.T) {
	const lease = 600 * time.Millisecond
	forEachStore(t, func(t *testing.T, k storeKind) {
		s := &extendCounter{Store: k.open(t), extended: make(chan struct{})}
		r := newRunner(t, s, idempotency.Options{Lease: lease, PollInterval: 10 * time.Millisecond})
		running := make(chan struct{})
		second := make(chan error, 1)
		go func() {
			<-running
			res, err := r.DoWait(t.Context(), "long", "fp", func(context.Context, idempotency.Claim) ([]byte, error) {
				return []byte("second"), nil
			})
			if err == nil && (!res.Replayed || string(res.Value) != "first") {
				err = fmt.Errorf("second caller got %+v; want the first's outcome replayed", res)
			}
			second <- err
		}()
		res, err := r.Do(t.Context(), "long", "fp", func(ctx context.Context, c idempotency.Claim) ([]byte, error) {
			close(running)
			// Run for three extensions, well past one lease.
			for range 3 {
				select {
				case <-s.extended:
				case <-ctx.Done():
					return nil, context.Cause(ctx)
				}
			}
			return []byte("first"), nil
		})
		if err != nil || string(res.Value) != "first" {
			t.Fatalf("long operation: %+v, %v", res, err)
		}
		if err := <-second; err != nil {
			t.Fatal(err)
		}
	})
}
