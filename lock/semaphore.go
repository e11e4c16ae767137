package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// This file extends the contract from one holder to many: a [Semaphore]
// admits Limit holders of a key, an [RWLocker] many readers or one writer.
// Both are the same request shape on the backend side, a [Share] of a
// key's permits, and the same Locker core: validation, waiting, local
// deadlines, auto-refresh, metrics and cleanup work for them as for the
// mutex.

// Share is the multi-holder part of a [Request]: how many permits a key has
// and how many of them the request takes. The zero Share is a mutex request.
//
// A backend that reports Capabilities.Semaphore (or RWLock) keeps, per key,
// the set of holders with their weights, expiries and owners, apart from the
// key's mutex, and follows these rules on top of those of [Backend]:
//
//   - Try grants req when the weights held plus req.Share.Weight fit in
//     req.Share.Limit and no earlier waiter of the key is queued in the
//     engine (so a waiting writer holds back readers that come after it);
//     otherwise it returns a *[HeldError].
//   - The limit belongs to the key: while the key has holders or waiters, a
//     request with another Limit gets a *[LimitError] and changes nothing.
//   - Every grant takes a fencing token from one counter per key, so tokens
//     strictly increase across all permits of the key (a writer's is greater
//     than every earlier lease's).
//   - Refresh and Release act on req.Owner's permit only; an expired permit
//     is freed without anyone's Release.
//   - A waiter (Subscribe, or a Queuer's Wait) takes its place in the
//     engine's queue of the key and leaves it when its subscription closes
//     or its wait ends; a waiter of a process that died leaves it within a
//     TTL.
type Share struct {
	// Limit is how many permits the key has; zero for a mutex request.
	Limit int
	// Weight is how many of them the request takes: 1 for a semaphore's
	// permit or a reader, Limit for a writer.
	Weight int
}

// RWPermits is the Limit of a reader-writer key: a reader takes one permit,
// a writer all of them. A [Semaphore] must have fewer.
const RWPermits = 1 << 30

// ErrLimitMismatch is returned by a Semaphore's Acquire and TryAcquire when
// the key is in use with another limit (another Semaphore, or an
// RWLocker). The error is a *LimitError.
var ErrLimitMismatch = errors.New("lock: key is in use with another limit")

// LimitError reports that a key is in use with another limit than the
// request's. It matches [ErrLimitMismatch].
type LimitError struct {
	Key string
	// Have is the limit the key is in use with; Want the request's.
	Have, Want int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("lock: key %q is in use with limit %d, not %d: every client of a key must agree on its limit", e.Key, e.Have, e.Want)
}

// Is makes a LimitError match ErrLimitMismatch.
func (e *LimitError) Is(target error) bool { return target == ErrLimitMismatch }

// Semaphore hands out up to Limit leases on each key at once: each permit is
// a [Lease] like a mutex's, with its TTL, refresh, auto-refresh, Done,
// owner-only release and a fencing token that strictly increases per key
// across all permits. Acquire waits for a permit, in the order the engine
// queues waiters (see the backend's Capabilities.FIFO); TryAcquire returns
// an error matching [ErrNotAcquired] when no permit is free or others wait.
// When the key is in use with another limit both return a *[LimitError].
//
// A Semaphore is safe for concurrent use; make one with [NewSemaphore] (a
// backend package's constructor calls it). Waiting counts Acquire calls
// waiting for a permit; Close stops the backend's background work.
type Semaphore struct {
	Locker
	limit int
}

// NewSemaphore builds a [Semaphore] with limit permits per key on a
// backend that reports Capabilities.Semaphore. Backend packages call it
// from their own constructors. It returns an error matching
// [ErrInvalidOptions] for a limit below 1 or not below [RWPermits], a
// backend without semaphores, or invalid opts.
func NewSemaphore(b Backend, opts Options, limit int) (*Semaphore, error) {
	if limit < 1 || limit >= RWPermits {
		return nil, fmt.Errorf("%w: semaphore limit %d is not between 1 and %d", ErrInvalidOptions, limit, RWPermits-1)
	}
	if b != nil && !b.Capabilities().Semaphore {
		return nil, fmt.Errorf("%w: backend %s has no semaphores", ErrInvalidOptions, b.Capabilities().Name)
	}
	l, err := newLocker(b, opts, Share{Limit: limit, Weight: 1})
	if err != nil {
		return nil, err
	}
	return &Semaphore{Locker: l, limit: limit}, nil
}

// Limit returns the number of permits per key.
func (s *Semaphore) Limit() int { return s.limit }

// RWLocker hands out shared (read) and exclusive (write) leases on keys:
// readers overlap each other, a writer overlaps nobody. Every lease is a
// [Lease] with TTL, refresh, auto-refresh, Done, owner-only release and a
// fencing token from one counter per key, so a writer's token is greater
// than every earlier reader's and writer's.
//
// Fairness is writer-preferring through the engine's queue of waiters: a
// writer that waits is queued, and a reader that comes after it queues
// behind it instead of joining the readers that hold the key, so a steady
// stream of readers cannot starve a writer: it is granted as soon as the
// readers holding the key when it came have released (or expired). Readers
// queued behind a writer are granted together after it, so writers cannot
// starve readers either. This is the order Java's fair ReentrantReadWriteLock
// and Go's sync.RWMutex give a waiting writer.
//
// An RWLocker is safe for concurrent use; make one with [NewRWLocker] (a
// backend package's constructor calls it).
type RWLocker struct {
	r, w     *locker
	b        Backend
	once     sync.Once
	closeErr error
}

// NewRWLocker builds an [RWLocker] on a backend that reports
// Capabilities.RWLock. Backend packages call it from their own
// constructors. It returns an error matching [ErrInvalidOptions] for a
// backend without reader-writer locks or invalid opts.
func NewRWLocker(b Backend, opts Options) (*RWLocker, error) {
	if b != nil && !b.Capabilities().RWLock {
		return nil, fmt.Errorf("%w: backend %s has no reader-writer locks", ErrInvalidOptions, b.Capabilities().Name)
	}
	r, err := newLocker(b, opts, Share{Limit: RWPermits, Weight: 1})
	if err != nil {
		return nil, err
	}
	w, err := newLocker(b, opts, Share{Limit: RWPermits, Weight: RWPermits})
	if err != nil {
		return nil, err
	}
	r.closeBackend, w.closeBackend = false, false
	return &RWLocker{r: r, w: w, b: b}, nil
}

// Reader returns the Locker of shared leases: its Acquire is
// [RWLocker.AcquireRead]. Closing it has no effect on the backend; close
// the RWLocker.
func (l *RWLocker) Reader() Locker { return l.r }

// Writer returns the Locker of exclusive leases: its Acquire is
// [RWLocker.AcquireWrite]. Closing it has no effect on the backend; close
// the RWLocker.
func (l *RWLocker) Writer() Locker { return l.w }

// AcquireRead waits for a shared lease on key; see [Locker.Acquire]. It
// queues behind writers that wait.
func (l *RWLocker) AcquireRead(ctx context.Context, key string) (*Lease, error) {
	return l.r.Acquire(ctx, key)
}

// TryAcquireRead takes a shared lease on key when no writer holds or waits
// for it, or returns an error matching [ErrNotAcquired].
func (l *RWLocker) TryAcquireRead(ctx context.Context, key string) (*Lease, error) {
	return l.r.TryAcquire(ctx, key)
}

// AcquireWrite waits for the exclusive lease on key; see [Locker.Acquire].
func (l *RWLocker) AcquireWrite(ctx context.Context, key string) (*Lease, error) {
	return l.w.Acquire(ctx, key)
}

// TryAcquireWrite takes the exclusive lease on key when nobody holds or
// waits for it, or returns an error matching [ErrNotAcquired].
func (l *RWLocker) TryAcquireWrite(ctx context.Context, key string) (*Lease, error) {
	return l.w.TryAcquire(ctx, key)
}

// Capabilities reports what the backend offers.
func (l *RWLocker) Capabilities() Capabilities { return l.r.Capabilities() }

// Waiting returns how many AcquireRead and AcquireWrite calls wait for key;
// see [Locker.Waiting].
func (l *RWLocker) Waiting(key string) int {
	if c, ok := l.b.(WaitCounter); ok {
		return c.Waiting(key)
	}
	return l.r.Waiting(key) + l.w.Waiting(key)
}

// Close stops the backend's background work and waits for it; waiting
// calls return [ErrClosed]. Close is idempotent.
func (l *RWLocker) Close() error {
	l.once.Do(func() {
		_ = l.r.Close()
		_ = l.w.Close()
		l.closeErr = l.b.Close()
	})
	return l.closeErr
}

// permitsAdd counts sign times req's permits on its key, for semaphores
// and reader-writer locks.
func (m *Metrics) permitsAdd(backend string, req Request, sign int) {
	if m != nil && req.Share.Limit > 0 {
		m.permits.WithLabelValues(backend, req.Key).Add(float64(sign * req.Share.Weight))
	}
}

// keyWaitingAdd counts n waiting Acquire calls on key, for semaphores and
// reader-writer locks.
func (m *Metrics) keyWaitingAdd(backend string, share Share, key string, n float64) {
	if m != nil && share.Limit > 0 {
		m.keyWaiting.WithLabelValues(backend, key).Add(n)
	}
}

// PermitsInUse returns the gauge of permits in use on key through
// semaphores and RWLockers of backend, for tests and dashboards.
func (m *Metrics) PermitsInUse(backend, key string) prometheus.Gauge {
	return m.permits.WithLabelValues(backend, key)
}

// KeyWaiting returns the gauge of semaphore and RWLocker Acquire calls of
// backend waiting for key.
func (m *Metrics) KeyWaiting(backend, key string) prometheus.Gauge {
	return m.keyWaiting.WithLabelValues(backend, key)
}
