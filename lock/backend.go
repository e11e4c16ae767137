package lock

import (
	"context"
	"slices"
	"sync"
	"time"
)

// This file is the backend side of the package: what an engine implements
// for [New] to build a [Locker] on, and the local waiter queue that backends
// with notification share. Users of haita do not need it.

// Backend is what an engine implements for [New] to build a [Locker] on.
// Users of haita do not call it. The Locker built by New calls it as
// follows, and a backend may rely on exactly this:
//
//   - Every Acquire and TryAcquire makes one [Request] with a fresh random
//     Owner, and passes that same Request (same Key, Owner, Holder, TTL) to
//     every Try, Subscribe and Wait of that call, and to the Release that
//     cleans up after it. The Owner therefore identifies one acquiring call:
//     it is the waiter's identity in [WaitQueue] and in [Queuer.Wait].
//     Refresh and Release of a granted lease carry its Token as well.
//   - Keys are valid ([ValidateKey]) and TTL is zero (no expiry) only for
//     backends without Capabilities.TTL.
//   - The contexts passed in are the caller's, or derived from it; a backend
//     must not compare them, store them or use them after the call returns.
//
// and a backend must follow these rules:
//
//   - Methods are safe for concurrent use, and Capabilities and DefaultTTL
//     return the same values on every call.
//   - Try returns an error matching [ErrNotAcquired] (a *[HeldError], with
//     holder and expiry where the engine knows them) for the definite "held
//     by someone else"; one matching [ErrLost] when it knows the key was not
//     granted to req, or that a grant, if any, could not be valid any more
//     (it came after the request's TTL); one matching [ErrInvalidKey],
//     [ErrInvalidOptions] or [ErrClosed] for those cases. Any other error
//     means the outcome is unknown: the Locker then calls Release(req) with
//     a fresh context before it reports [ErrIndeterminate].
//   - An error from Try matches context.Canceled or
//     context.DeadlineExceeded only when the ctx passed to Try ended: a
//     timeout of the backend's own must say something else (see ErrLost
//     above), or the caller would blame its own deadline.
//   - An attempt that Try abandons (its ctx ended) must not take the key
//     after the cleanup Release has run, or the backend must undo it itself:
//     a grant nobody knows about blocks the key for a TTL.
//   - Grant.Validity counts from the moment the Locker called Try (or Wait);
//     zero means req.TTL.
//   - Refresh returns an error matching [ErrNotHeld] when req.Owner no longer
//     holds the key; Release returns one when req.Owner does not hold it and
//     then changes nothing, which is also its answer to the cleanup of a
//     Try that never took the key. Any other error is indeterminate.
//   - Close stops every goroutine the backend started and waits for them;
//     the Locker calls it once.
type Backend interface {
	// Capabilities reports what the engine offers.
	Capabilities() Capabilities
	// DefaultTTL is the TTL used when Options.TTL is zero; zero means
	// leases do not expire.
	DefaultTTL() time.Duration
	// Try makes one attempt to take req.Key for req.Owner with req.TTL.
	Try(ctx context.Context, req Request) (Grant, error)
	// Refresh extends the lease of req.Owner (holding req.Token) to req.TTL
	// from now.
	Refresh(ctx context.Context, req Request) error
	// Release frees the key if req.Owner still holds it.
	Release(ctx context.Context, req Request) error
	// Close stops background work and waits for it.
	Close() error
}

// Request is one call from the Locker to its Backend. Owner identifies the
// acquiring call that made it (see [Backend]).
type Request struct {
	Key    string
	Owner  Owner
	Holder string
	TTL    time.Duration // zero: no expiry
	Token  Token         // the lease's token (Refresh, Release)
	Share  Share         // zero for a mutex; see [Share]
	// Wait is true for an Acquire, which waits when the key is held, and
	// false for a TryAcquire. A [Queuer] may queue a waiting request in
	// Try already: when Try reports the key held, the Locker calls Wait
	// with the same request (or, if it cannot, Release).
	Wait bool
}

// Grant is a Backend's answer to a successful Try.
type Grant struct {
	Token Token
	// Validity is how long the lease is valid counted from the moment the
	// request was sent; zero means req.TTL. Quorum backends report less
	// (TTL minus the time the quorum took).
	Validity time.Duration
}

// Notifier is implemented by backends that can tell waiters a key was
// released. When Acquire finds the key held it calls Subscribe with its
// request, tries again at once, and then tries whenever the subscription
// delivers or the fallback poll fires, with the same request each time, and
// closes the subscription before it returns.
//
// Subscribe must be in effect when it returns, so that a release after it is
// never missed. It returns ctx's error when ctx ends first; any other error
// makes the Locker poll instead.
type Notifier interface {
	Subscribe(ctx context.Context, req Request) (Subscription, error)
}

// Subscription delivers release notifications for one waiter.
type Subscription interface {
	// C receives a value (or is closed) when the key may be free.
	C() <-chan struct{}
	// Close ends the subscription. It is called once, before Acquire
	// returns.
	Close()
}

// Queuer is implemented by backends that wait in their own queue (FIFO
// engines). Acquire calls Try first and Wait only when Try found the key
// held. Wait blocks until req.Key is granted to req.Owner or ctx ends; on
// ctx's end it must leave nothing behind and return ctx.Err() (a grant that
// raced with the end must be released by Wait itself). The Grant's Validity
// counts from the call of Wait; zero means a full TTL from then, which is
// right only for a grant made at once.
type Queuer interface {
	Wait(ctx context.Context, req Request) (Grant, error)
}

// WaitCounter is implemented by [Queuer] backends that can tell how many
// waiters are in their queue for a key. [Locker.Waiting] then reports it, so
// that the count means "queued, in the order they will be served", not only
// "about to call Wait", which is what the Locker counts by itself.
type WaitCounter interface {
	Waiting(key string) int
}

// MaxHandoffs bounds how many times in a row a [WaitQueue] hands a key
// straight from one local holder to the next. After that a release frees the
// key for everyone, so that waiters in other processes get a turn.
const MaxHandoffs = 8

// WaitQueue keeps, per key, the local waiters of one Locker in the order
// they started waiting, and hands a key released by this Locker straight to
// the first of them. Backends with notification ([Notifier]) use it so that
// a goroutine that releases and at once acquires again cannot barge ahead of
// goroutines that have been waiting, and so that a hot key passes from one
// local holder to the next in one round trip instead of a release, a
// notification and an attempt. Waiters in other processes compete as usual:
// the order is local.
//
// A backend uses it in four places:
//
//   - Subscribe calls [WaitQueue.Join] with the request and returns the
//     [*Waiter] (or a Subscription that closes it) once the engine's
//     notification is in effect.
//   - Try calls [WaitQueue.Gate] first. [Queued] means report the key held
//     without asking the engine, [HandedOver] means return the grant it
//     gives, and [Proceed] means ask the engine; when the engine grants the
//     key, Try calls [WaitQueue.Took].
//   - Release calls [WaitQueue.Handoff]. When it returns a handoff, Release
//     asks the engine, in one atomic step, to move the key from the
//     releasing owner to the handoff's To request (a new token, a full TTL,
//     no notification) and reports the outcome with [Handoff.Done] or
//     [Handoff.Failed]; when it returns nil, Release frees the key and
//     notifies as usual.
//   - The engine's notification that a key was freed calls
//     [WaitQueue.Wake]; a reconnect after which notifications may have been
//     lost calls [WaitQueue.WakeAll].
//
// The queue never hands a key to the owner that releases it (a waiter that
// gives up releases what its own attempt may have taken), nor to a waiter
// without TTL, nor more than [MaxHandoffs] times in a row. A key handed to a
// waiter that left before taking it is freed with the release function given
// to [NewWaitQueue].
//
// Only the first waiter of a key (the head) proceeds to the engine; the
// others are queued until it leaves. A WaitQueue is safe for concurrent use.
type WaitQueue struct {
	release func(Request)

	mu   sync.Mutex
	keys map[string]*waitKey
}

// waitKey is the local waiters of one key.
type waitKey struct {
	key      string
	waiters  []*Waiter // oldest first; waiters[0] is the head
	handoffs int       // consecutive local handoffs
}

// NewWaitQueue returns an empty queue. release frees a key that was handed
// to a waiter that left before taking it: it must release the key if the
// given request holds it, with a context of its own (the waiter's may be
// why it left).
func NewWaitQueue(release func(Request)) *WaitQueue {
	return &WaitQueue{release: release, keys: make(map[string]*waitKey)}
}

// Verdict is [WaitQueue.Gate]'s answer to an attempt.
type Verdict int

const (
	// Proceed: ask the engine.
	Proceed Verdict = iota
	// Queued: other local waiters come first; report the key held.
	Queued
	// HandedOver: a release handed the key to this waiter; Gate's Grant is
	// the answer.
	HandedOver
)

// Waiter is one waiting Acquire in a [WaitQueue]. It implements
// [Subscription]: C is woken when the waiter should try again, and Close
// takes it out of the queue.
type Waiter struct {
	q   *WaitQueue
	k   *waitKey
	req Request
	c   chan struct{} // wake-ups, buffered

	// Guarded by q.mu.
	handing bool      // a release is handing the key to it
	grant   *Grant    // handed over, not yet taken by Gate
	sent    time.Time // when the handing release was sent
	took    bool      // it got the key (from the engine or a handoff)
	closed  bool
}

var _ Subscription = (*Waiter)(nil)

// Join puts a waiter for req at the end of req.Key's queue. The waiter is
// identified by req.Owner from then on.
func (q *WaitQueue) Join(req Request) *Waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := q.keys[req.Key]
	if k == nil {
		k = &waitKey{key: req.Key}
		q.keys[req.Key] = k
	}
	w := &Waiter{q: q, k: k, req: req, c: make(chan struct{}, 1)}
	k.waiters = append(k.waiters, w)
	return w
}

// Waiting returns how many waiters key has.
func (q *WaitQueue) Waiting(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if k := q.keys[key]; k != nil {
		return len(k.waiters)
	}
	return 0
}

// Gate decides what an attempt with req does: see [Verdict]. An attempt
// from the head proceeds, as does any attempt of a key nobody waits for;
// one from another waiter, or from an Acquire or TryAcquire that is not
// waiting, is queued. A head that a release handed the key to gets the
// grant, with its Validity shortened by the time since the handing release
// was sent, because the Locker counts from the attempt.
func (q *WaitQueue) Gate(req Request) (Grant, Verdict) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := q.keys[req.Key]
	if k == nil {
		return Grant{}, Proceed
	}
	w := k.find(req.Owner)
	switch {
	case w == nil:
		return Grant{}, Queued
	case w.grant != nil:
		g := *w.grant
		w.grant = nil
		w.took = true
		if req.TTL > 0 {
			g.Validity = max(req.TTL-time.Since(w.sent), time.Nanosecond)
		}
		return g, HandedOver
	case w.handing, w != k.waiters[0]:
		return Grant{}, Queued
	}
	return Grant{}, Proceed
}

// Took records that the engine granted req.Key to req.Owner after Gate said
// Proceed: when that waiter leaves the queue the next one is not woken,
// since the new holder's release hands the key on.
func (q *WaitQueue) Took(req Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if k := q.keys[req.Key]; k != nil {
		if w := k.find(req.Owner); w != nil {
			w.took = true
		}
	}
}

// Handoff is a release under way that hands its key to a local waiter.
type Handoff struct {
	w *Waiter
	// To is the waiter's request: the engine gives the key to To.Owner
	// with To.TTL and To.Holder.
	To Request
}

// Handoff returns the handoff that a release of req should make, or nil
// when the release should free the key: nobody waits, the head is the
// releasing owner itself or has no TTL, a handoff to it is under way, or
// MaxHandoffs handoffs were made in a row. The caller must report the
// outcome with Done or Failed.
func (q *WaitQueue) Handoff(req Request) *Handoff {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := q.keys[req.Key]
	if k == nil {
		return nil
	}
	w := k.waiters[0]
	if w.req.Owner == req.Owner || w.handing || w.grant != nil || w.req.TTL <= 0 || k.handoffs >= MaxHandoffs {
		k.handoffs = 0
		return nil
	}
	k.handoffs++
	w.handing = true
	return &Handoff{w: w, To: w.req}
}

// Done records that the engine gave the key to h.To with g, in a request
// sent at sent, and wakes the waiter; when the waiter has left meanwhile
// the key is freed again.
func (h *Handoff) Done(g Grant, sent time.Time) {
	q := h.w.q
	q.mu.Lock()
	h.w.handing = false
	orphan := h.w.closed
	if !orphan {
		h.w.grant, h.w.sent = &g, sent
		h.w.wake()
	}
	q.mu.Unlock()
	if orphan {
		q.release(h.To)
	}
}

// Failed records that the release did not hand the key over, and wakes the
// head: the key may be free. When the engine's answer was lost (neither a
// grant nor a definite "not held"), the caller must first free the key for
// h.To, which may have got it.
func (h *Handoff) Failed() {
	q := h.w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	h.w.handing = false
	h.w.k.handoffs = 0
	// The waiter may have left, and the key's queue with it.
	if k := q.keys[h.w.k.key]; k != nil {
		k.waiters[0].wake()
	}
}

// Wake tells the head of key's queue that the key may be free, and resets
// the count of consecutive handoffs: the engine freed the key for everyone.
func (q *WaitQueue) Wake(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if k := q.keys[key]; k != nil {
		k.handoffs = 0
		k.waiters[0].wake()
	}
}

// WakeAll wakes the head of every key: notifications may have been lost.
func (q *WaitQueue) WakeAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range q.keys {
		k.waiters[0].wake()
	}
}

// C implements [Subscription].
func (w *Waiter) C() <-chan struct{} { return w.c }

// Close implements [Subscription]: the waiter leaves its key's queue. A key
// handed to it and not taken is freed again. When it was the head and
// leaves without the key, the next waiter is woken to ask the engine.
func (w *Waiter) Close() {
	q := w.q
	q.mu.Lock()
	if w.closed {
		q.mu.Unlock()
		return
	}
	w.closed = true
	orphan := w.grant != nil
	w.grant = nil
	k := w.k
	if i := slices.Index(k.waiters, w); i >= 0 {
		k.waiters = slices.Delete(k.waiters, i, i+1)
		switch {
		case len(k.waiters) == 0:
			delete(q.keys, k.key)
		case i == 0 && !w.took:
			k.waiters[0].wake()
		}
	}
	q.mu.Unlock()
	if orphan {
		q.release(w.req)
	}
}

// wake queues a wake-up unless one is pending.
func (w *Waiter) wake() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// find returns the waiter of owner, or nil.
func (k *waitKey) find(owner Owner) *Waiter {
	for _, w := range k.waiters {
		if w.req.Owner == owner {
			return w
		}
	}
	return nil
}
