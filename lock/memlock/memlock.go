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
// [lock.Locker.Acquire]. Waiters are served in arrival order.
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

// Capabilities reports TTL, fencing, FIFO and notification; memlock is not
// cross-process.
func (l *Locker) Capabilities() lock.Capabilities { return caps }

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
		s.mu.Unlock()
	}
	return n
}

var caps = lock.Capabilities{Name: "memlock", TTL: true, Fencing: true, FIFO: true, LossDetection: true, Notify: true}

const shardCount = 64

type backend struct {
	seed   maphash.Seed
	tokens atomic.Uint64 // one counter for every key: strictly increasing per key too
	shards [shardCount]shard
}

type shard struct {
	mu   sync.Mutex
	m    map[string]*entry
	peak int
	_    [40]byte // keep shards on separate cache lines
}

// entry is a held key. expires is on the monotonic clock; zero: never.
type entry struct {
	owner   lock.Owner
	holder  string
	token   lock.Token
	expires time.Time
	waiters []*waiter
}

type waiter struct {
	owner   lock.Owner
	holder  string
	ttl     time.Duration
	granted chan lock.Token // buffered; receives the token when handed the key
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

func (e *entry) expired(now time.Time) bool { return !e.expires.IsZero() && !now.Before(e.expires) }

func (b *backend) Try(_ context.Context, req lock.Request) (lock.Grant, error) {
	s := b.shard(req.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[req.Key]
	var now time.Time
	if e != nil || req.TTL > 0 {
		now = time.Now()
	}
	if e != nil && !e.expired(now) {
		return lock.Grant{}, held(req.Key, e, now)
	}
	if e != nil && len(e.waiters) > 0 {
		// Expired with waiters queued: the first waiter gets it, not us.
		s.handoff(req.Key, e, &b.tokens, now)
		return lock.Grant{}, held(req.Key, e, now)
	}
	if e == nil {
		e = entryPool.Get().(*entry)
		s.m[req.Key] = e
		s.peak = max(s.peak, len(s.m))
	}
	e.owner, e.holder, e.token, e.expires = req.Owner, req.Holder, lock.Token(b.tokens.Add(1)), expiry(now, req.TTL)
	return lock.Grant{Token: e.token}, nil
}

func held(key string, e *entry, now time.Time) error {
	he := &lock.HeldError{Key: key, Holder: e.holder}
	if !e.expires.IsZero() {
		he.ExpiresAt = time.Now().Add(e.expires.Sub(now))
	}
	return he
}

// Wait queues req behind the holder and returns when the key is handed to
// it.
func (b *backend) Wait(ctx context.Context, req lock.Request) (lock.Grant, error) {
	s := b.shard(req.Key)
	w := &waiter{owner: req.Owner, holder: req.Holder, ttl: req.TTL, granted: make(chan lock.Token, 1)}
	s.mu.Lock()
	e := s.m[req.Key]
	now := time.Now()
	if e == nil {
		e = entryPool.Get().(*entry)
		e.owner, e.holder, e.token, e.expires = req.Owner, req.Holder, lock.Token(b.tokens.Add(1)), expiry(now, req.TTL)
		s.m[req.Key] = e
		s.mu.Unlock()
		return lock.Grant{Token: e.token}, nil
	}
	e.waiters = append(e.waiters, w)
	if e.expired(now) {
		s.handoff(req.Key, e, &b.tokens, now)
	}
	s.mu.Unlock()

	var timer *time.Timer
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		timeout = nil
		if e := s.m[req.Key]; e != nil && e.owner != req.Owner && !e.expires.IsZero() {
			timer = time.NewTimer(time.Until(e.expires))
			timeout = timer.C
		}
		s.mu.Unlock()
		select {
		case tok := <-w.granted:
			if timer != nil {
				timer.Stop()
			}
			return lock.Grant{Token: tok}, nil
		case <-timeout:
			// The holder's TTL passed without a release: hand the key on.
			s.mu.Lock()
			if e := s.m[req.Key]; e != nil && e.expired(time.Now()) {
				s.handoff(req.Key, e, &b.tokens, time.Now())
			}
			s.mu.Unlock()
		case <-ctx.Done():
			s.mu.Lock()
			var queue []*waiter
			if e := s.m[req.Key]; e != nil {
				queue = e.waiters
			}
			for i, x := range queue {
				if x == w {
					e := s.m[req.Key]
					e.waiters = append(e.waiters[:i], e.waiters[i+1:]...)
					s.mu.Unlock()
					return lock.Grant{}, ctx.Err()
				}
			}
			s.mu.Unlock()
			// Granted while the context ended: give it back.
			<-w.granted
			b.release(req.Key, req.Owner)
			return lock.Grant{}, ctx.Err()
		}
	}
}

// handoff passes e to its first waiter, or deletes it when nobody waits.
// s.mu is held.
func (s *shard) handoff(key string, e *entry, tokens *atomic.Uint64, now time.Time) {
	if len(e.waiters) == 0 {
		delete(s.m, key)
		*e = entry{waiters: e.waiters[:0]}
		entryPool.Put(e)
		if len(s.m) == 0 && s.peak > 1024 {
			// Go maps keep their memory after deletes: start afresh once empty.
			s.m, s.peak = make(map[string]*entry), 0
		}
		return
	}
	w := e.waiters[0]
	copy(e.waiters, e.waiters[1:])
	e.waiters[len(e.waiters)-1] = nil
	e.waiters = e.waiters[:len(e.waiters)-1]
	e.owner, e.holder, e.token, e.expires = w.owner, w.holder, lock.Token(tokens.Add(1)), expiry(now, w.ttl)
	w.granted <- e.token
}

func (b *backend) Refresh(_ context.Context, req lock.Request) error {
	s := b.shard(req.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[req.Key]
	now := time.Now()
	if e == nil || e.owner != req.Owner || e.expired(now) {
		return lock.ErrNotHeld
	}
	e.expires = expiry(now, req.TTL)
	return nil
}

func (b *backend) Release(_ context.Context, req lock.Request) error {
	return b.release(req.Key, req.Owner)
}

func (b *backend) release(key string, owner lock.Owner) error {
	s := b.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e == nil || e.owner != owner {
		return lock.ErrNotHeld
	}
	var now time.Time
	if !e.expires.IsZero() || len(e.waiters) > 0 {
		now = time.Now()
	}
	if e.expired(now) {
		// Expired: it is free already; pass it on, but this was no release.
		s.handoff(key, e, &b.tokens, now)
		return lock.ErrNotHeld
	}
	s.handoff(key, e, &b.tokens, now)
	return nil
}
