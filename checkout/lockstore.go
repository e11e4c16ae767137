package checkout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haita/haita/lock"
)

// LockStoreOptions configure a [LockStore]. The zero value is valid.
type LockStoreOptions struct {
	// Prefix is prepended to a resource name to form its lock key. Zero
	// selects "checkout/".
	Prefix string
}

// LockStore is a [Store] over any lock backend: a checkout is a lease on
// the key Prefix+resource. It is safe for concurrent use. Its zero value
// is not usable: call [NewLockStore]; call Close to release every lease.
//
// Its limits, compared with [SQLStore]:
//   - No Save transaction: [Manager.Save] returns [ErrNoTransaction]. Guard
//     writes with the checkout's Fence (the lease's fencing token, on
//     backends with lock.Capabilities.Fencing), for example with
//     sqlcc.FencedUpdate, so that a write after the checkout ended is
//     refused.
//   - The checkout's details (owner, since, token) and the records of
//     breaks and expiries live in this process's memory. Heartbeat,
//     Release and Break work only in the process that acquired; another
//     process sees a *HeldError with the lock's holder name
//     (lock.Options.Holder) and its lease expiry instead of the owner, and
//     cannot break it. A restart forgets every record.
//   - Exclusion across processes is the backend's: memlock excludes only
//     this process; filelock this machine; Redis, PostgreSQL and etcd
//     everyone sharing the server. Leases without TTL (memlock without
//     TTL, filelock) are freed when idle limit or maximum age passes only
//     when this process next looks (any call, or Sweep). Give a TTL
//     backend a lock TTL of about Options.Idle and no AutoRefresh, so that
//     a dead process frees its checkouts; Heartbeat refreshes the lease.
//   - One mutex orders the store's calls: a slow backend call delays the
//     others in this process.
type LockStore struct {
	l      lock.Locker
	prefix string

	mu    sync.Mutex
	held  map[string]*lockCheckout // by resource
	ended map[string]endRecord     // by token
}

type lockCheckout struct {
	c     Checkout
	lease *lock.Lease
}

type endRecord struct {
	c      Checkout
	broken bool
	by     string
	at     time.Time
	reason string
}

var _ Store = (*LockStore)(nil)

// NewLockStore returns a store over l. It returns an error matching
// [ErrInvalid] for a nil Locker. The caller keeps ownership of l and closes
// it after closing the store.
func NewLockStore(l lock.Locker, opts LockStoreOptions) (*LockStore, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil locker", ErrInvalid)
	}
	if opts.Prefix == "" {
		opts.Prefix = "checkout/"
	}
	return &LockStore{l: l, prefix: opts.Prefix, held: map[string]*lockCheckout{}, ended: map[string]endRecord{}}, nil
}

// Close releases every lease the store holds. The store must not be used
// afterwards.
func (s *LockStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for r, h := range s.held {
		if err := h.lease.Release(context.Background()); err != nil && !errors.Is(err, lock.ErrNotHeld) {
			errs = append(errs, err)
		}
		delete(s.held, r)
	}
	return errors.Join(errs...)
}

// current returns the live local checkout of resource, first ending it if
// it expired or its lease was lost. s.mu is held.
func (s *LockStore) current(resource string, now time.Time) *lockCheckout {
	h := s.held[resource]
	if h == nil {
		return nil
	}
	if h.c.live(now) && h.lease.Err() == nil {
		return h
	}
	s.end(h, endRecord{c: h.c, at: h.c.Until})
	return nil
}

// end releases h's lease and keeps its record. s.mu is held.
func (s *LockStore) end(h *lockCheckout, rec endRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.lease.Release(ctx)
	delete(s.held, h.c.Resource)
	s.ended[h.c.Token] = rec
}

// why explains why token does not hold resource. s.mu is held.
func (s *LockStore) why(resource, token string) error {
	rec, ok := s.ended[token]
	switch {
	case !ok || rec.c.Resource != resource:
		return ErrNotHeld
	case rec.broken:
		return &BrokenError{Resource: resource, Owner: rec.c.Owner, By: rec.by, At: rec.at, Reason: rec.reason}
	default:
		return ErrExpired
	}
}

// Acquire implements [Store].
func (s *LockStore) Acquire(ctx context.Context, req Request) (Checkout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.current(req.Resource, req.Now); h != nil {
		if h.c.Owner != req.Owner {
			return Checkout{}, &HeldError{Resource: req.Resource, Holder: h.c.Owner, Since: h.c.Since, Until: h.c.Until}
		}
		return s.beat(ctx, h, req)
	}
	le, err := s.l.TryAcquire(ctx, s.prefix+req.Resource)
	var he *lock.HeldError
	if errors.As(err, &he) {
		return Checkout{}, &HeldError{Resource: req.Resource, Holder: he.Holder, Until: he.ExpiresAt}
	}
	if err != nil {
		return Checkout{}, fmt.Errorf("checkout: acquire %q: %w", req.Resource, err)
	}
	c := Checkout{Resource: req.Resource, Owner: req.Owner, Token: req.Token, Since: req.Now, LastBeat: req.Now,
		Until: until(req.Now, req.Now, req.Idle, req.MaxAge), Fence: uint64(le.Token())}
	s.held[req.Resource] = &lockCheckout{c: c, lease: le}
	return c, nil
}

// beat refreshes h's lease and renews its checkout. s.mu is held.
func (s *LockStore) beat(ctx context.Context, h *lockCheckout, req Request) (Checkout, error) {
	if err := h.lease.Refresh(ctx); err != nil {
		if errors.Is(err, lock.ErrNotHeld) {
			s.end(h, endRecord{c: h.c, at: req.Now})
			return Checkout{}, ErrExpired
		}
		return Checkout{}, fmt.Errorf("checkout: heartbeat %q: %w", req.Resource, err)
	}
	h.c.LastBeat = req.Now
	h.c.Until = until(h.c.Since, req.Now, req.Idle, req.MaxAge)
	return h.c, nil
}

// Heartbeat implements [Store].
func (s *LockStore) Heartbeat(ctx context.Context, req Request) (Checkout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.current(req.Resource, req.Now)
	if h == nil || h.c.Token != req.Token {
		return Checkout{}, s.why(req.Resource, req.Token)
	}
	return s.beat(ctx, h, req)
}

// Release implements [Store].
func (s *LockStore) Release(ctx context.Context, req Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[req.Resource]
	if h == nil || h.c.Token != req.Token {
		return s.why(req.Resource, req.Token)
	}
	delete(s.held, req.Resource)
	if err := h.lease.Release(ctx); err != nil && !errors.Is(err, lock.ErrNotHeld) {
		return fmt.Errorf("checkout: release %q: %w", req.Resource, err)
	}
	return nil
}

// ReleaseOwner implements [Store].
func (s *LockStore) ReleaseOwner(ctx context.Context, req Request) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	var errs []error
	for r := range s.held {
		h := s.current(r, req.Now)
		if h == nil || h.c.Owner != req.Owner {
			continue
		}
		delete(s.held, r)
		n++
		if err := h.lease.Release(ctx); err != nil && !errors.Is(err, lock.ErrNotHeld) {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// Break implements [Store]. Only checkouts taken through this store can be
// broken.
func (s *LockStore) Break(ctx context.Context, req Request) (Checkout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.current(req.Resource, req.Now)
	if h == nil {
		return Checkout{}, ErrNotHeld
	}
	s.end(h, endRecord{c: h.c, broken: true, by: req.By, at: req.Now, reason: req.Reason})
	return h.c, nil
}

// Get implements [Store]. A checkout of another process is reported with
// the lock's holder name and expiry only; finding it takes and at once
// releases the lock when it is free.
func (s *LockStore) Get(ctx context.Context, req Request) (Checkout, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.current(req.Resource, req.Now); h != nil {
		return h.c, true, nil
	}
	le, err := s.l.TryAcquire(ctx, s.prefix+req.Resource)
	var he *lock.HeldError
	if errors.As(err, &he) {
		return Checkout{Resource: req.Resource, Owner: he.Holder, Until: he.ExpiresAt}, true, nil
	}
	if err != nil {
		return Checkout{}, false, fmt.Errorf("checkout: get %q: %w", req.Resource, err)
	}
	if err := le.Release(ctx); err != nil {
		return Checkout{}, false, fmt.Errorf("checkout: get %q: %w", req.Resource, err)
	}
	return Checkout{}, false, nil
}

// Sweep implements [Store]: it ends this process's expired checkouts and
// forgets old records.
func (s *LockStore) Sweep(ctx context.Context, req Request) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for r, h := range s.held {
		if s.current(r, req.Now) == nil && h != nil {
			n++
		}
	}
	cut := req.Now.Add(-req.Retention)
	for t, rec := range s.ended {
		if rec.at.Before(cut) {
			delete(s.ended, t)
		}
	}
	return n, nil
}
