package memlock

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/haita/haita/lock"
)

// NewSemaphore returns a [lock.Semaphore] with limit permits per key, in
// this process. Waiters are served in arrival order (FIFO). It returns an
// error matching lock.ErrInvalidOptions for a bad limit or opts.
func NewSemaphore(opts lock.Options, limit int) (*lock.Semaphore, error) {
	return new(Locker).Semaphore(opts, limit)
}

// NewRWLocker returns a [lock.RWLocker] in this process: readers overlap,
// a writer excludes everyone, and a waiting writer holds back readers that
// come after it (see lock.RWLocker for the fairness). It returns an error
// matching lock.ErrInvalidOptions for invalid opts.
func NewRWLocker(opts lock.Options) (*lock.RWLocker, error) {
	return new(Locker).RWLocker(opts)
}

// Semaphore returns a [lock.Semaphore] with opts over l's keys: semaphores
// and reader-writer lockers made from one Locker (or from Lockers made with
// [Locker.With]) share their keys, and a key in use with one limit refuses
// another with a *lock.LimitError. Keys of semaphores are apart from the
// mutex keys of the same name.
func (l *Locker) Semaphore(opts lock.Options, limit int) (*lock.Semaphore, error) {
	l.init()
	return lock.NewSemaphore(l.b, opts, limit)
}

// RWLocker returns a [lock.RWLocker] with opts over l's keys; see
// [Locker.Semaphore].
func (l *Locker) RWLocker(opts lock.Options) (*lock.RWLocker, error) {
	l.init()
	return lock.NewRWLocker(l.b, opts)
}

// multiKeys is the state of every semaphore and reader-writer key.
type multiKeys struct {
	mu sync.Mutex
	m  map[string]*multiKey
}

// multiKey is one key's holders and its queue of waiters.
type multiKey struct {
	limit    int
	used     int
	expiring int // holders with an expiry: purge has work only then
	holders  map[lock.Owner]multiHolder
	queue    []*multiWaiter // arrival order; queue[0] is served first
}

type multiHolder struct {
	weight  int
	holder  string
	expires time.Time // zero: never
}

type multiWaiter struct {
	owner lock.Owner
	ch    chan struct{} // wake-ups, buffered
}

// get returns key's state, checking the limit; nil and an error when the
// key is in use with another limit. m.mu is held.
func (m *multiKeys) get(req lock.Request, now time.Time) (*multiKey, error) {
	if m.m == nil {
		m.m = make(map[string]*multiKey)
	}
	k := m.m[req.Key]
	if k == nil {
		k = multiKeyPool.Get().(*multiKey)
		k.limit = req.Share.Limit
		m.m[req.Key] = k
	}
	k.purge(now)
	if k.limit != req.Share.Limit {
		if len(k.holders) > 0 || len(k.queue) > 0 {
			return nil, &lock.LimitError{Key: req.Key, Have: k.limit, Want: req.Share.Limit}
		}
		k.limit = req.Share.Limit
	}
	return k, nil
}

// purge frees expired permits and wakes the first waiter when it did.
func (k *multiKey) purge(now time.Time) {
	if k.expiring == 0 {
		return
	}
	freed := false
	for o, h := range k.holders {
		if !h.expires.IsZero() && !now.Before(h.expires) {
			k.remove(o, h)
			freed = true
		}
	}
	if freed {
		k.wakeHead()
	}
}

// remove takes holder o off the key.
func (k *multiKey) remove(o lock.Owner, h multiHolder) {
	delete(k.holders, o)
	k.used -= h.weight
	if !h.expires.IsZero() {
		k.expiring--
	}
}

// now reads the clock when k or req has an expiry to judge; the zero time
// otherwise, which keeps the path without TTLs cheap.
func (k *multiKey) now(req lock.Request) time.Time {
	if req.TTL == 0 && (k == nil || k.expiring == 0) {
		return time.Time{}
	}
	return time.Now()
}

// fits reports whether weight more permits are free.
func (k *multiKey) fits(weight int) bool { return k.used+weight <= k.limit }

func (k *multiKey) wakeHead() {
	if len(k.queue) > 0 {
		select {
		case k.queue[0].ch <- struct{}{}:
		default:
		}
	}
}

// take grants req a permit. m.mu is held.
func (b *backend) takeMulti(k *multiKey, req lock.Request, now time.Time) lock.Token {
	k.holders[req.Owner] = multiHolder{weight: req.Share.Weight, holder: req.Holder, expires: expiry(now, req.TTL)}
	k.used += req.Share.Weight
	if req.TTL > 0 {
		k.expiring++
	}
	if k.used < k.limit {
		k.wakeHead() // room for the next waiter too
	}
	return lock.Token(b.tokens.Add(1))
}

// heldMulti is the HeldError for a key without room: the earliest expiry
// of its holders, when they all expire.
func heldMulti(key string, k *multiKey, now time.Time) error {
	he := &lock.HeldError{Key: key}
	for _, h := range k.holders {
		if h.expires.IsZero() {
			return &lock.HeldError{Key: key, Holder: h.holder}
		}
		if he.ExpiresAt.IsZero() || h.expires.Before(he.ExpiresAt) {
			he.ExpiresAt, he.Holder = h.expires, h.holder
		}
	}
	if !he.ExpiresAt.IsZero() {
		he.ExpiresAt = time.Now().Add(he.ExpiresAt.Sub(now))
	}
	return he
}

// multiKeyPool recycles the state of idle keys.
var multiKeyPool = sync.Pool{New: func() any { return &multiKey{holders: make(map[lock.Owner]multiHolder)} }}

// drop deletes key's state when nobody holds or waits. m.mu is held.
func (m *multiKeys) drop(key string, k *multiKey) {
	if len(k.holders) == 0 && len(k.queue) == 0 {
		delete(m.m, key)
		k.used, k.expiring, k.queue = 0, 0, k.queue[:0]
		multiKeyPool.Put(k)
	}
}

func (b *backend) tryMulti(req lock.Request) (lock.Grant, error) {
	m := &b.multi
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.m[req.Key].now(req)
	k, err := m.get(req, now)
	if err != nil {
		return lock.Grant{}, err
	}
	if len(k.queue) > 0 || !k.fits(req.Share.Weight) {
		err := heldMulti(req.Key, k, now)
		m.drop(req.Key, k)
		return lock.Grant{}, err
	}
	return lock.Grant{Token: b.takeMulti(k, req, now)}, nil
}

// waitMulti queues req and returns when it holds a permit, or ctx ends.
// Only the first waiter may take permits, so a waiting writer holds back
// readers behind it.
func (b *backend) waitMulti(ctx context.Context, req lock.Request) (lock.Grant, error) {
	start := time.Now()
	m := &b.multi
	w := &multiWaiter{owner: req.Owner, ch: make(chan struct{}, 1)}
	m.mu.Lock()
	k, err := m.get(req, start)
	if err != nil {
		m.mu.Unlock()
		return lock.Grant{}, err
	}
	k.queue = append(k.queue, w)
	w.ch <- struct{}{} // look at once
	m.mu.Unlock()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-w.ch:
		case <-timer.C:
		case <-ctx.Done():
			m.mu.Lock()
			k := m.m[req.Key]
			if i := slices.Index(k.queue, w); i >= 0 {
				k.queue = slices.Delete(k.queue, i, i+1)
				if i == 0 {
					k.wakeHead()
				}
			}
			m.drop(req.Key, k)
			m.mu.Unlock()
			return lock.Grant{}, ctx.Err()
		}
		m.mu.Lock()
		now := time.Now()
		k := m.m[req.Key] // still there: w is queued in it
		k.purge(now)
		if k.queue[0] == w && k.fits(req.Share.Weight) {
			k.queue = k.queue[1:]
			tok := b.takeMulti(k, req, now)
			k.wakeHead()
			m.mu.Unlock()
			g := lock.Grant{Token: tok}
			if req.TTL > 0 {
				g.Validity = now.Add(req.TTL).Sub(start)
			}
			return g, nil
		}
		// Wake up when the first permit to expire does, to free it.
		var first time.Time
		for _, h := range k.holders {
			if !h.expires.IsZero() && (first.IsZero() || h.expires.Before(first)) {
				first = h.expires
			}
		}
		m.mu.Unlock()
		if !first.IsZero() {
			timer.Reset(time.Until(first))
		}
	}
}

func (b *backend) refreshMulti(req lock.Request) error {
	m := &b.multi
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.m[req.Key]
	if k == nil {
		return lock.ErrNotHeld
	}
	now := time.Now()
	k.purge(now)
	h, ok := k.holders[req.Owner]
	if !ok {
		m.drop(req.Key, k)
		return lock.ErrNotHeld
	}
	h.expires = expiry(now, req.TTL)
	k.holders[req.Owner] = h
	return nil
}

func (b *backend) releaseMulti(req lock.Request) error {
	m := &b.multi
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.m[req.Key]
	if k == nil {
		return lock.ErrNotHeld
	}
	k.purge(k.now(req))
	h, ok := k.holders[req.Owner]
	if !ok {
		m.drop(req.Key, k)
		return lock.ErrNotHeld
	}
	k.remove(req.Owner, h)
	k.wakeHead()
	m.drop(req.Key, k)
	return nil
}

// multiWaiting counts the waiters of a semaphore or reader-writer key.
func (b *backend) multiWaiting(key string) int {
	m := &b.multi
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := m.m[key]; k != nil {
		return len(k.queue)
	}
	return 0
}
