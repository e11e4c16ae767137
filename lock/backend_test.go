package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/memlock"
)

// queue is a WaitQueue that records what it frees.
type queue struct {
	*lock.WaitQueue
	mu    sync.Mutex
	freed []lock.Owner
}

func newQueue() *queue {
	q := &queue{}
	q.WaitQueue = lock.NewWaitQueue(func(req lock.Request) {
		q.mu.Lock()
		q.freed = append(q.freed, req.Owner)
		q.mu.Unlock()
	})
	return q
}

func request(key string) lock.Request {
	return lock.Request{Key: key, Owner: lock.NewOwner(), TTL: time.Minute}
}

func woken(w *lock.Waiter) bool {
	select {
	case <-w.C():
		return true
	default:
		return false
	}
}

func TestWaitQueueOrder(t *testing.T) {
	q := newQueue()
	a, b, other := request("k"), request("k"), request("k")
	if _, v := q.Gate(other); v != lock.Proceed {
		t.Fatalf("Gate with nobody waiting = %v, want Proceed", v)
	}
	wa, wb := q.Join(a), q.Join(b)
	defer wa.Close()
	defer wb.Close()
	if n := q.Waiting("k"); n != 2 {
		t.Fatalf("Waiting = %d, want 2", n)
	}
	for _, tc := range []struct {
		name string
		req  lock.Request
		want lock.Verdict
	}{
		{"head", a, lock.Proceed},
		{"second waiter", b, lock.Queued},
		{"not waiting", other, lock.Queued},
		{"other key", request("other"), lock.Proceed},
	} {
		if _, v := q.Gate(tc.req); v != tc.want {
			t.Errorf("%s: Gate = %v, want %v", tc.name, v, tc.want)
		}
	}
	wa.Close()
	if !woken(wb) {
		t.Error("the new head was not woken when the head left without the key")
	}
	if _, v := q.Gate(b); v != lock.Proceed {
		t.Errorf("new head: Gate = %v, want Proceed", v)
	}
}

// TestWaitQueueNoHandoffToReleaser: a waiter that gives up releases what
// its own attempt may have taken while it is still queued. That release
// must free the key, not hand it to the releasing waiter itself.
func TestWaitQueueNoHandoffToReleaser(t *testing.T) {
	q := newQueue()
	a := request("k")
	w := q.Join(a)
	defer w.Close()
	if h := q.Handoff(a); h != nil {
		t.Fatalf("a release by the head handed the key to the head itself (%s)", h.To.Owner)
	}
}

func TestWaitQueueHandoff(t *testing.T) {
	q := newQueue()
	holder, a := request("k"), request("k")
	w := q.Join(a)
	defer w.Close()
	sent := time.Now().Add(-time.Second)
	h := q.Handoff(holder)
	if h == nil || h.To.Owner != a.Owner {
		t.Fatalf("Handoff = %v, want one to the head", h)
	}
	if _, v := q.Gate(a); v != lock.Queued {
		t.Errorf("Gate during the handoff = %v, want Queued", v)
	}
	if q.Handoff(request("k")) != nil {
		t.Error("a second handoff to a waiter already being handed to")
	}
	h.Done(lock.Grant{Token: 7}, sent)
	if !woken(w) {
		t.Error("the waiter was not woken by the handoff")
	}
	g, v := q.Gate(a)
	if v != lock.HandedOver || g.Token != 7 {
		t.Fatalf("Gate after the handoff = %v %+v, want HandedOver with token 7", v, g)
	}
	if g.Validity <= 0 || g.Validity > a.TTL-time.Second {
		t.Errorf("Validity %v not counted from the handing release, sent 1s ago", g.Validity)
	}
	w.Close()
	if len(q.freed) != 0 {
		t.Errorf("a taken handoff was freed: %v", q.freed)
	}
}

func TestWaitQueueHandoffToLeaver(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(*lock.Waiter, *lock.Handoff)
	}{
		{"left during the handoff", func(w *lock.Waiter, h *lock.Handoff) {
			w.Close()
			h.Done(lock.Grant{Token: 1}, time.Now())
		}},
		{"left before taking it", func(w *lock.Waiter, h *lock.Handoff) {
			h.Done(lock.Grant{Token: 1}, time.Now())
			w.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue()
			a := request("k")
			w := q.Join(a)
			h := q.Handoff(request("k"))
			if h == nil {
				t.Fatal("no handoff")
			}
			tc.leave(w, h)
			if len(q.freed) != 1 || q.freed[0] != a.Owner {
				t.Fatalf("freed %v, want the leaver's grant once", q.freed)
			}
			if n := q.Waiting("k"); n != 0 {
				t.Errorf("Waiting = %d after the only waiter left", n)
			}
		})
	}
}

func TestWaitQueueHandoffFailed(t *testing.T) {
	q := newQueue()
	a := request("k")
	w := q.Join(a)
	defer w.Close()
	h := q.Handoff(request("k"))
	h.Failed()
	if !woken(w) {
		t.Error("the head was not woken after a failed handoff")
	}
	if _, v := q.Gate(a); v != lock.Proceed {
		t.Errorf("Gate after a failed handoff = %v, want Proceed", v)
	}
}

// TestWaitQueueBoundedHandoffs: after MaxHandoffs handoffs in a row a
// release frees the key, so that waiters elsewhere get a turn; a
// notification (Wake) starts the count again.
func TestWaitQueueBoundedHandoffs(t *testing.T) {
	q := newQueue()
	holder := request("k")
	var reqs []lock.Request
	var ws []*lock.Waiter
	for range lock.MaxHandoffs + 2 {
		r := request("k")
		reqs, ws = append(reqs, r), append(ws, q.Join(r))
	}
	defer func() {
		for _, w := range ws {
			w.Close()
		}
	}()
	for i := range lock.MaxHandoffs {
		h := q.Handoff(holder)
		if h == nil || h.To.Owner != reqs[i].Owner {
			t.Fatalf("handoff %d: %v, want one to waiter %d", i+1, h, i)
		}
		h.Done(lock.Grant{Token: lock.Token(i + 1)}, time.Now())
		if _, v := q.Gate(reqs[i]); v != lock.HandedOver {
			t.Fatalf("Gate = %v", v)
		}
		ws[i].Close()
		holder = reqs[i]
	}
	if h := q.Handoff(holder); h != nil {
		t.Fatalf("handoff %d in a row, to %s; want the key freed", lock.MaxHandoffs+1, h.To.Owner)
	}
	q.Wake("k")
	if !woken(ws[lock.MaxHandoffs]) {
		t.Error("Wake did not wake the head")
	}
	if q.Handoff(holder) == nil {
		t.Error("no handoff after a notification reset the count")
	}
}

func TestWaitQueueNoHandoffWithoutTTL(t *testing.T) {
	q := newQueue()
	a := request("k")
	a.TTL = 0
	w := q.Join(a)
	defer w.Close()
	if q.Handoff(request("k")) != nil {
		t.Error("handed a key to a waiter without TTL")
	}
}

// TestBackendTimeoutIsNotCallersDeadline: a Try that fails with a deadline
// of the backend's own, while the caller's context is alive, must not be
// reported as the caller's deadline.
func TestBackendTimeoutIsNotCallersDeadline(t *testing.T) {
	b := &timingOut{}
	l, err := lock.New(b, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = l.TryAcquire(t.Context(), "k")
	if errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, lock.ErrIndeterminate) {
		t.Fatalf("TryAcquire = %v, want ErrIndeterminate not matching context.DeadlineExceeded", err)
	}
	if b.released != 1 {
		t.Errorf("the possible grant was released %d times, want 1", b.released)
	}
	var te *timeoutError
	if !errors.As(err, &te) {
		t.Errorf("the backend's typed error is hidden: %v", err)
	}
}

type timeoutError struct{}

func (*timeoutError) Error() string { return "statement timeout" }
func (*timeoutError) Unwrap() error { return context.DeadlineExceeded }

// timingOut's attempts run into a statement timeout of its own.
type timingOut struct{ flaky }

func (*timingOut) Try(context.Context, lock.Request) (lock.Grant, error) {
	return lock.Grant{}, fmt.Errorf("pg: %w", &timeoutError{})
}

// TestWaitingCount: Locker.Waiting and the haita_lock_waiting gauge count an
// Acquire while it waits, and stop counting it when it returns.
func TestWaitingCount(t *testing.T) {
	m := lock.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	gauge := func() float64 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "haita_lock_waiting" {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return 0
	}
	l, err := memlock.New(lock.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		le2, err := l.Acquire(t.Context(), "k")
		if err != nil {
			t.Error(err)
			return
		}
		_ = le2.Release(t.Context())
	})
	locktest.WaitUntilWaiting(t, l, "k", 1)
	if g := gauge(); g != 1 {
		t.Errorf("haita_lock_waiting = %v while one Acquire waits", g)
	}
	if n := l.Waiting("other"); n != 0 {
		t.Errorf("Waiting(other) = %d", n)
	}
	_ = le.Release(t.Context())
	wg.Wait()
	if n, g := l.Waiting("k"), gauge(); n != 0 || g != 0 {
		t.Errorf("after the waiter got the key: Waiting = %d, haita_lock_waiting = %v", n, g)
	}
}
