package redislock

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
)

// hub multiplexes the waiters of one Locker over one pub/sub connection and
// keeps, per key, the local waiters in the order they started waiting.
//
// Only the first waiter of a key (the head) asks Redis for it; the others,
// and a new Acquire of the same Locker, stay behind it without a round trip
// ("queued"), so a goroutine that releases and at once acquires again cannot
// barge ahead of goroutines that have been waiting. A release by this Locker
// hands the key straight to the head when the head has made itself known
// (one round trip: the release script sets the head's owner value), and a
// release by anyone else publishes on the key's channel, which wakes the
// head. Waiters in other processes compete as usual: the order is local.
//
// A waiter is identified by the context the Locker passes to both Subscribe
// and Try while it waits.
type hub struct {
	c Client

	mu     sync.Mutex
	ps     *redis.PubSub // nil until the first subscription
	keys   map[string]*keyState
	chans  map[string]*keyState // by channel name
	closed bool
	done   chan struct{} // closed when the reader goroutine ends

	// releaseOrphan frees a key handed to a waiter that left.
	releaseOrphan func(lock.Request)
}

type keyState struct {
	key     string
	channel string
	waiters []*waiter // waiters[0] is the head

	subscribed   bool // a SUBSCRIBE is in force or on its way
	subSent      int  // SUBSCRIBE commands sent for the channel
	subConfirmed int  // their confirmations received, in order
	handoffs     int  // consecutive local handoffs
}

type waiter struct {
	h       *hub
	ks      *keyState
	ctx     context.Context
	c       chan struct{} // wake-ups, buffered
	ready   chan struct{} // closed when the subscription is confirmed
	want    int           // subConfirmed needed for ready
	isReady bool

	known   bool         // req is set: the waiter has called Try
	req     lock.Request // its request
	handing bool         // a release is handing the key to it
	grant   *lock.Grant  // handed over, not yet taken by Try
	sent    time.Time    // when the handing release was sent
	closed  bool
}

func newHub(c Client, releaseOrphan func(lock.Request)) *hub {
	return &hub{c: c, keys: make(map[string]*keyState), chans: make(map[string]*keyState), releaseOrphan: releaseOrphan}
}

type verdict int

const (
	proceed    verdict = iota // ask Redis
	queued                    // behind other local waiters: report the key held
	handedOver                // the key was handed over: here is the grant
)

// gate decides what a Try for key does.
func (h *hub) gate(ctx context.Context, key string, req lock.Request) (lock.Grant, verdict) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ks := h.keys[key]
	if ks == nil || len(ks.waiters) == 0 {
		return lock.Grant{}, proceed
	}
	var w *waiter
	for _, x := range ks.waiters {
		if x.ctx == ctx {
			w = x
			break
		}
	}
	head := ks.waiters[0]
	if w == nil {
		if !head.known {
			// The head has not shown up yet: do not hold others back on
			// the word of a waiter we cannot recognise.
			return lock.Grant{}, proceed
		}
		return lock.Grant{}, queued
	}
	w.known, w.req = true, req
	switch {
	case w.grant != nil:
		g := *w.grant
		w.grant = nil
		// Validity counts from the handing release, which was sent before
		// this Try started.
		g.Validity = req.TTL - time.Since(w.sent)
		if g.Validity <= 0 {
			g.Validity = time.Nanosecond
		}
		return g, handedOver
	case w.handing, w != head:
		return lock.Grant{}, queued
	}
	return lock.Grant{}, proceed
}

// pickHandoff returns the waiter a release of key should hand the key to,
// marked as being handed to, and its request; or nil.
func (h *hub) pickHandoff(key string) (*waiter, lock.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ks := h.keys[key]
	if ks == nil || len(ks.waiters) == 0 {
		return nil, lock.Request{}
	}
	w := ks.waiters[0]
	if !w.known || w.handing || w.grant != nil || w.req.TTL <= 0 || ks.handoffs >= maxHandoffs {
		ks.handoffs = 0
		return nil, lock.Request{}
	}
	ks.handoffs++
	w.handing = true
	return w, w.req
}

// handed records a grant made by a release for w and wakes it; when w has
// left meanwhile the key is freed again.
func (h *hub) handed(w *waiter, req lock.Request, g lock.Grant, sent time.Time) {
	h.mu.Lock()
	w.handing = false
	orphan := w.closed
	if !orphan {
		w.grant, w.sent = &g, sent
		wake(w.c)
	}
	h.mu.Unlock()
	if orphan {
		h.releaseOrphan(req)
	}
}

// notHanded undoes pickHandoff when the release did not hand the key over,
// and wakes the head: the key may be free.
func (h *hub) notHanded(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w.handing = false
	w.ks.handoffs = 0
	if len(w.ks.waiters) > 0 {
		wake(w.ks.waiters[0].c)
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// subscribe adds a waiter for key and returns once Redis has confirmed the
// subscription to the key's channel.
func (h *hub) subscribe(ctx context.Context, key string) (lock.Subscription, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, lock.ErrClosed
	}
	ks := h.keys[key]
	if ks == nil {
		ks = &keyState{key: key, channel: channel(key)}
		h.keys[key] = ks
		h.chans[ks.channel] = ks
	}
	w := &waiter{h: h, ks: ks, ctx: ctx, c: make(chan struct{}, 1), ready: make(chan struct{})}
	ks.waiters = append(ks.waiters, w)
	if !ks.subscribed {
		ks.subscribed = true
		ks.subSent++
		if err := h.send(ctx, "subscribe", ks.channel); err != nil {
			ks.subSent--
			ks.subscribed = false
			h.remove(w)
			h.mu.Unlock()
			return nil, err
		}
	}
	w.want = ks.subSent
	if ks.subConfirmed >= w.want {
		w.isReady = true
		close(w.ready)
	}
	h.mu.Unlock()

	select {
	case <-w.ready:
		return w, nil
	case <-ctx.Done():
		w.Close()
		return nil, ctx.Err()
	}
}

// send writes SUBSCRIBE or UNSUBSCRIBE on the shared connection, opening it
// and starting the reader on first use. h.mu is held.
func (h *hub) send(ctx context.Context, cmd, ch string) error {
	if h.ps == nil {
		if cmd != "subscribe" {
			return nil
		}
		ps := h.c.Subscribe(ctx)
		if err := ps.Subscribe(ctx, ch); err != nil {
			_ = ps.Close()
			return err
		}
		h.ps = ps
		h.done = make(chan struct{})
		msgs := ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
		go h.read(msgs)
		return nil
	}
	if cmd == "subscribe" {
		return h.ps.Subscribe(ctx, ch)
	}
	return h.ps.Unsubscribe(ctx, ch)
}

// read dispatches confirmations and messages until the pub/sub closes.
func (h *hub) read(msgs <-chan any) {
	defer close(h.done)
	for m := range msgs {
		h.mu.Lock()
		switch m := m.(type) {
		case *redis.Subscription:
			ks := h.chans[m.Channel]
			if ks == nil || m.Kind != "subscribe" {
				break
			}
			ks.subConfirmed++
			if ks.subConfirmed > ks.subSent {
				// A resubscription after a reconnect: messages may have
				// been lost meanwhile.
				ks.subConfirmed = ks.subSent
				if len(ks.waiters) > 0 {
					wake(ks.waiters[0].c)
				}
			}
			for _, w := range ks.waiters {
				if !w.isReady && w.want <= ks.subConfirmed {
					w.isReady = true
					close(w.ready)
				}
			}
			h.forget(ks)
		case *redis.Message:
			ks := h.chans[m.Channel]
			if ks == nil || len(ks.waiters) == 0 {
				break
			}
			ks.handoffs = 0
			if ks.waiters[0].known {
				wake(ks.waiters[0].c)
			} else {
				for _, w := range ks.waiters {
					wake(w.c)
				}
			}
		}
		h.mu.Unlock()
	}
}

// remove takes w out of its key's queue, unsubscribing when it was the last
// waiter. h.mu is held.
func (h *hub) remove(w *waiter) {
	ks := w.ks
	i := slices.Index(ks.waiters, w)
	if i < 0 {
		return
	}
	ks.waiters = slices.Delete(ks.waiters, i, i+1)
	if len(ks.waiters) == 0 {
		if ks.subscribed && !h.closed && h.ps != nil {
			ks.subscribed = false
			_ = h.send(context.Background(), "unsubscribe", ks.channel)
		}
		h.forget(ks)
	} else if i == 0 {
		wake(ks.waiters[0].c) // the new head asks Redis
	}
}

// forget drops the state of a key nobody waits for once its subscription
// confirmations are all in. h.mu is held.
func (h *hub) forget(ks *keyState) {
	if len(ks.waiters) == 0 && !ks.subscribed && ks.subConfirmed == ks.subSent {
		delete(h.keys, ks.key)
		delete(h.chans, ks.channel)
	}
}

func (h *hub) close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	ps, done := h.ps, h.done
	h.mu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}

// C implements lock.Subscription.
func (w *waiter) C() <-chan struct{} { return w.c }

// Close implements lock.Subscription: the waiter leaves its key's queue. A
// key handed to it and not taken is freed again.
func (w *waiter) Close() {
	h := w.h
	h.mu.Lock()
	if w.closed {
		h.mu.Unlock()
		return
	}
	w.closed = true
	orphan, req := w.grant, w.req
	w.grant = nil
	h.remove(w)
	h.mu.Unlock()
	if orphan != nil {
		h.releaseOrphan(req)
	}
}
