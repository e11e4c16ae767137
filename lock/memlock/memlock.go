package memlock

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haita/haita/lock"
)

// Locker is an in-process keyed lock. The zero value is ready to use, with
// leases that never expire; use [New] for a TTL, auto-refresh, a wait limit
// or metrics. A Locker is safe for concurrent use and must not be copied
// after first use.
type Locker struct {
	opts lock.Options
	once sync.Once
	core lock.Locker
	b    *backend
	err  error
}

var _ lock.Locker = (*Locker)(nil)

// New returns a Locker with opts. TTL zero means leases never expire. It
// returns an error matching lock.ErrInvalidOptions for invalid opts.
func New(opts lock.Options) (*Locker, error) {
	l := &Locker{opts: opts}
	l.init()
	if l.err != nil {
		return nil, l.err
	}
	return l, nil
}

// With returns a Locker with other options over the same keys: its leases
// and l's exclude each other. Closing either leaves the other working.
func (l *Locker) With(opts lock.Options) (*Locker, error) {
	l.init()
	w := &Locker{opts: opts, b: l.b}
	w.init()
	if w.err != nil {
		return nil, w.err
	}
	return w, nil
}

func (l *Locker) init() {
	l.once.Do(func() {
		if l.b == nil {
			l.b = &backend{seed: maphash.MakeSeed()}
			for i := range l.b.shards {
				l.b.shards[i].m = make(map[string]*entry)
			}
		}
		l.core, l.err = lock.New(l.b, l.opts)
	})
}

// Acquire waits until key is free and returns its lease; see
// [lock.Locker.Acquire]. Waiters queue in arrival order; a goroutine that
// finds the key free may take it before the first waiter wakes, as with
// sync.Mutex, until that waiter has lost for a millisecond: then the next
// release hands the key to it directly. So a hot key keeps its throughput
// and no waiter starves.
func (l *Locker) Acquire(ctx context.Context, key string) (*lock.Lease, error) {
	l.init()
	if l.err != nil {
		return nil, l.err
	}
	return l.core.Acquire(ctx, key)
}

// TryAcquire takes key if it is free and nobody waits for it; otherwise it
// returns an error matching lock.ErrNotAcquired at once.
func (l *Locker) TryAcquire(ctx context.Context, key string) (*lock.Lease, error) {
	l.init()
	if l.err != nil {
		return nil, l.err
	}
	return l.core.TryAcquire(ctx, key)
}

// Capabilities reports TTL, fencing, loss detection and notification;
// memlock is not strictly FIFO (see Acquire) and not cross-process.
// cross-process.
func (l *Locker) Capabilities() lock.Capabilities { return caps }

// Waiting returns how many Acquire calls wait in key's queue; see
// [lock.Locker.Waiting]. Lockers made with [Locker.With] share the queue,
// and the count.
func (l *Locker) Waiting(key string) int {
	l.init()
	if l.err != nil {
		return 0
	}
	return l.core.Waiting(key)
}

// Close makes waiting and later Acquire calls return lock.ErrClosed.
func (l *Locker) Close() error {
	l.init()
	if l.err != nil {
		return l.err
	}
	return l.core.Close()
}

// Len returns the number of keys currently held or waited for: the memory
// the Locker keeps.
func (l *Locker) Len() int {
	l.init()
	n := 0
	for i := range l.b.shards {
		s := &l.b.shards[i]
		s.mu.Lock()
		n += len(s.m)
		if s.idle != nil {
			n-- // kept for its next acquire, not held
		}
		s.mu.Unlock()
	}
	return n
}

var caps = lock.Capabilities{Name: "memlock", TTL: true, Fencing: true, LossDetection: true, Notify: true, Semaphore: true, RWLock: true}

const shardCount = 64

// starveAfter is how long the first waiter may lose the key to arriving
// goroutines before a release hands the key to it directly, as sync.Mutex
// switches to starvation mode.
const starveAfter = time.Millisecond

type backend struct {
	seed   maphash.Seed
	tokens atomic.Uint64 // one counter for every key: strictly increasing per key too
	shards [shardCount]shard
	multi  multiKeys // semaphore and reader-writer keys (semaphore.go)
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	// idle is the one entry in m that is neither held nor waited for: the
	// last key freed stays for its next acquire, which then costs a lookup
	// instead of an insert and a delete (a hot key's every turn). Freeing
	// another key evicts it, so a shard keeps at most one free key.
	idle *entry
	peak int
	_    [32]byte // keep shards on separate cache lines
}

// entry is a key that is held or waited for, or the shard's idle key.
type entry struct {
	key      string
	held     bool
	owner    lock.Owner
	holder   string
	token    lock.Token
	expires  time.Time // on the monotonic clock; zero: never
	waiters  []*waiter // in arrival order
	woken    bool      // the first waiter was told the key is free and has not looked yet
	starving bool      // the first waiter lost too long: the next release hands over to it
}

type waiter struct {
	owner  lock.Owner
	holder string
	ttl    time.Duration
	since  time.Time
	// ch receives a token when the key is handed over, or 0 when the key
	// became free and the waiter should take it if it still can.
	ch chan lock.Token
}

var entryPool = sync.Pool{New: func() any { return new(entry) }}

func (b *backend) shard(key string) *shard {
	return &b.shards[maphash.String(b.seed, key)%shardCount]
}

func (b *backend) Capabilities() lock.Capabilities { return caps }
func (b *backend) DefaultTTL() time.Duration       { return 0 }
func (b *backend) Close() error                    { return nil }

func expiry(now time.Time, ttl time.Duration) time.Time {
	if ttl == 0 {
		return time.Time{}
	}
	return now.Add(ttl)
}

func (e *entry) expired(now time.Time) bool {
	return e.held && !e.expires.IsZero() && !now.Before(e.expires)
}

// take gives e to an owner. s.mu is held.
func (b *backend) take(e *entry, owner lock.Owner, holder string, ttl time.Duration, now time.Time) lock.Token {
	e.held, e.owner, e.holder, e.expires = true, owner, holder, expiry(now, ttl)
	e.token = lock.Token(b.tokens.Add(1))
	return e.token
}

// get returns key's entry, creating it. s.mu is held.
func (s *shard) get(key string) *entry {
	e := s.m[key]
	if e == nil {
		e = entryPool.Get().(*entry)
		e.key = key
		s.m[key] = e
		s.peak = max(s.peak, len(s.m))
	} else if e == s.idle {
		s.idle = nil
	}
	return e
}

// free ends the current holding of e: the entry goes away when nobody
// waits, a starving first waiter gets the key directly, otherwise the first
// waiter is woken to take it. s.mu is held.
func (b *backend) free(s *shard, key string, e *entry, now time.Time) {
	e.held, e.owner, e.holder, e.expires = false, lock.Owner{}, "", time.Time{}
	if len(e.waiters) == 0 {
		e.starving, e.woken = false, false
		if old := s.idle; old != nil && old != e {
			s.drop(old)
		}
		s.idle = e
		if len(s.m) == 1 && s.peak > 1024 {
			// Go maps keep their memory after deletes: start afresh once
			// nothing is held.
			s.drop(e)
			s.m, s.peak = make(map[string]*entry), 0
		}
		return
	}
	w := e.waiters[0]
	if e.starving {
		e.waiters = remove(e.waiters, w)
		e.starving = false
		if e.woken {
			// Drop the wake-up if it is still pending (the waiter may have
			// taken it and be waiting for s.mu): the key comes with this send.
			select {
			case <-w.ch:
			default:
			}
			e.woken = false
		}
		if now.IsZero() {
			now = time.Now()
		}
		w.ch <- b.take(e, w.owner, w.holder, w.ttl, now)
		return
	}
	if !e.woken {
		e.woken = true
		w.ch <- 0
	}
}

// drop deletes the free entry e from the shard. s.mu is held.
func (s *shard) drop(e *entry) {
	delete(s.m, e.key)
	if s.idle == e {
		s.idle = nil
	}
	*e = entry{waiters: e.waiters[:0]}
	entryPool.Put(e)
}

func remove(ws []*waiter, w *waiter) []*waiter {
	for i, x := range ws {
		if x == w {
			copy(ws[i:], ws[i+1:])
			ws[len(ws)-1] = nil
			return ws[:len(ws)-1]
		}
	}
	return ws
}

func queued(ws []*waiter, w *waiter) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}

// Try takes key if it is free. It may overtake queued waiters, as
// sync.Mutex lets a running goroutine overtake, unless the first waiter has
// been starving.
func (b *backend) Try(_ context.Context, req lock.Request) (lock.Grant, error) {
	if req.Share.Limit > 0 {
		return b.tryMulti(req)
	}
	s := b.shard(req.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[req.Key]
	var now time.Time
	if req.TTL > 0 || e != nil && e.held && !e.expires.IsZero() {
		// Without a TTL on either side no clock is read: a hot key's
		// holder pays for nothing it does not use.
		now = time.Now()
	}
	if e != nil && e.expired(now) {
		b.free(s, req.Key, e, now)
		e = s.m[req.Key]
	}
	if e == nil {
		e = s.get(req.Key)
		return lock.Grant{Token: b.take(e, req.Owner, req.Holder, req.TTL, now)}, nil
	}
	if e.held || e.starving {
		return lock.Grant{}, held(req.Key, e, now)
	}
	if e == s.idle {
		s.idle = nil
	}
	return lock.Grant{Token: b.take(e, req.Owner, req.Holder, req.TTL, now)}, nil
}

// Waiting implements lock.WaitCounter: the waiters in key's queue.
func (b *backend) Waiting(key string) int {
	if n := b.multiWaiting(key); n > 0 {
		return n
	}
	s := b.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil {
		return len(e.waiters)
	}
	return 0
}

func held(key string, e *entry, now time.Time) error {
	he := &lock.HeldError{Key: key, Holder: e.holder}
	if e.held && !e.expires.IsZero() {
		he.ExpiresAt = time.Now().Add(e.expires.Sub(now))
	}
	return he
}

// Wait queues req and returns when it holds the key. The grant's validity
// counts from the call, as lock.Queuer asks: the key was handed over later,
// with a full TTL from then.
func (b *backend) Wait(ctx context.Context, req lock.Request) (lock.Grant, error) {
	if req.Share.Limit > 0 {
		return b.waitMulti(ctx, req)
	}
	start := time.Now()
	g, err := b.wait(ctx, req, start)
	if err != nil || req.TTL == 0 {
		return g, err
	}
	s := b.shard(req.Key)
	s.mu.Lock()
	g.Validity = time.Nanosecond // no longer ours: expired at once
	if e := s.m[req.Key]; e != nil && e.held && e.owner == req.Owner {
		g.Validity = e.expires.Sub(start)
	}
	s.mu.Unlock()
	return g, nil
}

func (b *backend) wait(ctx context.Context, req lock.Request, now time.Time) (lock.Grant, error) {
	s := b.shard(req.Key)
	w := &waiter{owner: req.Owner, holder: req.Holder, ttl: req.TTL, since: now, ch: make(chan lock.Token, 1)}
	s.mu.Lock()
	e := s.get(req.Key)
	if e.expired(now) {
		b.free(s, req.Key, e, now)
		e = s.get(req.Key)
	}
	if !e.held && !e.starving && len(e.waiters) == 0 {
		tok := b.take(e, req.Owner, req.Holder, req.TTL, now)
		s.mu.Unlock()
		return lock.Grant{Token: tok}, nil
	}
	e.waiters = append(e.waiters, w)
	if !e.held && !e.woken && len(e.waiters) == 1 {
		e.woken = true // free with nobody woken: look at once
		w.ch <- 0
	}
	s.mu.Unlock()

	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var expire <-chan time.Time
		s.mu.Lock()
		if e := s.m[req.Key]; e != nil && e.held && !e.expires.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(e.expires))
			} else {
				timer.Reset(time.Until(e.expires))
			}
			expire = timer.C
		}
		s.mu.Unlock()
		select {
		case tok := <-w.ch:
			if tok > 0 {
				return lock.Grant{Token: tok}, nil
			}
			s.mu.Lock()
			e := s.m[req.Key]
			if !queued(e.waiters, w) {
				// Handed over after the wake-up was dropped for it.
				s.mu.Unlock()
				return lock.Grant{Token: <-w.ch}, nil
			}
			e.woken = false
			now := time.Now()
			if e.expired(now) {
				b.free(s, req.Key, e, now)
				if !queued(e.waiters, w) {
					s.mu.Unlock()
					return lock.Grant{Token: <-w.ch}, nil
				}
				e.woken = false
				select { // free woke us again; we look now
				case <-w.ch:
				default:
				}
			}
			if !e.held {
				e.waiters = remove(e.waiters, w)
				e.starving = false
				tok := b.take(e, req.Owner, req.Holder, req.TTL, now)
				s.mu.Unlock()
				return lock.Grant{Token: tok}, nil
			}
			if now.Sub(w.since) > starveAfter {
				e.starving = true
			}
			s.mu.Unlock()
		case <-expire:
			// The holder's TTL passed without a release: free the key.
			s.mu.Lock()
			if e := s.m[req.Key]; e != nil && e.expired(time.Now()) {
				b.free(s, req.Key, e, time.Now())
			}
			s.mu.Unlock()
		case <-ctx.Done():
			s.mu.Lock()
			e := s.m[req.Key]
			if !queued(e.waiters, w) {
				// Granted as the context ended: give it back.
				s.mu.Unlock()
				tok := <-w.ch
				_ = b.release(req.Key, req.Owner)
				_ = tok
				return lock.Grant{}, ctx.Err()
			}
			first := e.waiters[0] == w
			e.waiters = remove(e.waiters, w)
			if first {
				e.starving = false
				if e.woken {
					e.woken = false
					select {
					case <-w.ch:
					default:
					}
				}
				if !e.held {
					// Pass the turn on, or drop the entry when nobody is left.
					b.free(s, req.Key, e, time.Time{})
				}
			}
			s.mu.Unlock()
			return lock.Grant{}, ctx.Err()
		}
	}
}

func (b *backend) Refresh(_ context.Context, req lock.Request) error {
	if req.Share.Limit > 0 {
		return b.refreshMulti(req)
	}
	s := b.shard(req.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[req.Key]
	now := time.Now()
	if e == nil || !e.held || e.owner != req.Owner || e.expired(now) {
		return lock.ErrNotHeld
	}
	e.expires = expiry(now, req.TTL)
	return nil
}

func (b *backend) Release(_ context.Context, req lock.Request) error {
	if req.Share.Limit > 0 {
		return b.releaseMulti(req)
	}
	return b.release(req.Key, req.Owner)
}

func (b *backend) release(key string, owner lock.Owner) error {
	s := b.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e == nil || !e.held || e.owner != owner {
		return lock.ErrNotHeld
	}
	var now time.Time
	if !e.expires.IsZero() {
		now = time.Now()
	}
	if e.expired(now) {
		// Expired: it is free already; pass it on, but this was no release.
		b.free(s, key, e, now)
		return lock.ErrNotHeld
	}
	b.free(s, key, e, now)
	return nil
}
