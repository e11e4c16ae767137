package redlock

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
)

// hub multiplexes the subscriptions of one Locker's waiters over one pub/sub
// connection to one instance: the first waiter of a key subscribes to the
// key's channel, the last one to leave unsubscribes. A message on a channel
// names the waiter whose turn it is, and wakes it alone; a resubscription
// after a reconnect wakes every waiter of the key (messages may have been
// lost).
type hub struct {
	c    subscriber
	wake func(key, owner string) // owner "": every waiter of key

	mu     sync.Mutex
	ps     *redis.PubSub // nil until the first subscription
	chans  map[string]*channelState
	closed bool
	done   chan struct{}  // closed when the reader goroutine ends
	timers sync.WaitGroup // linger timers armed or running
}

// linger is how long a channel nobody waits on stays subscribed: a
// contender that waits again soon does not pay for a SUBSCRIBE and an
// UNSUBSCRIBE each time.
const linger = time.Second

// channelState is one channel and the waiters that need it.
type channelState struct {
	linger *time.Timer // unsubscribes when nobody needs the channel
	key    string      // the lock key whose waiters a message wakes
	refs   int         // waiters subscribed or subscribing

	subscribed   bool // a SUBSCRIBE is in force or on its way
	subSent      int  // SUBSCRIBE commands sent for the channel
	subConfirmed int  // their confirmations received, in order
	pending      []*pendingSub
}

// pendingSub is a subscriber waiting for the confirmation of a SUBSCRIBE.
type pendingSub struct {
	want  int           // subConfirmed needed
	ready chan struct{} // closed on confirmation
}

func newHub(c subscriber, wake func(key, owner string)) *hub {
	return &hub{c: c, wake: wake, chans: make(map[string]*channelState)}
}

// subscribe returns once this instance has confirmed the subscription to
// ch, the channel of key; the caller must unref ch when done.
func (h *hub) subscribe(ctx context.Context, ch, key string) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return lock.ErrClosed
	}
	cs := h.chans[ch]
	if cs == nil {
		cs = &channelState{key: key}
		h.chans[ch] = cs
	}
	cs.refs++
	if cs.linger != nil && cs.linger.Stop() {
		h.timers.Done()
	}
	cs.linger = nil
	if !cs.subscribed {
		cs.subscribed = true
		cs.subSent++
		if err := h.send(ctx, "subscribe", ch); err != nil {
			cs.subSent--
			cs.subscribed = false
			h.mu.Unlock()
			h.unref(ch)
			return err
		}
	}
	p := &pendingSub{want: cs.subSent, ready: make(chan struct{})}
	if cs.subConfirmed >= p.want {
		close(p.ready)
	} else {
		cs.pending = append(cs.pending, p)
	}
	h.mu.Unlock()

	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		h.mu.Lock()
		if i := slices.Index(cs.pending, p); i >= 0 {
			cs.pending = slices.Delete(cs.pending, i, i+1)
		}
		h.mu.Unlock()
		h.unref(ch)
		return ctx.Err()
	}
}

// unref lets go of ch, unsubscribing when nobody needs it any more.
func (h *hub) unref(ch string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.chans[ch]
	if cs == nil {
		return
	}
	if cs.refs--; cs.refs > 0 {
		return
	}
	if cs.subscribed && !h.closed && h.ps != nil && cs.linger == nil {
		h.timers.Add(1)
		cs.linger = time.AfterFunc(linger, func() {
			defer h.timers.Done()
			h.mu.Lock()
			defer h.mu.Unlock()
			if cs.linger == nil || cs.refs > 0 {
				return
			}
			cs.linger = nil
			if cs.subscribed && !h.closed {
				cs.subscribed = false
				_ = h.send(context.Background(), "unsubscribe", ch)
			}
			h.forget(ch, cs)
		})
		return
	}
	h.forget(ch, cs)
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
			cs := h.chans[m.Channel]
			if cs == nil || m.Kind != "subscribe" {
				break
			}
			cs.subConfirmed++
			if cs.subConfirmed > cs.subSent {
				// A resubscription after a reconnect: messages may have
				// been lost meanwhile.
				cs.subConfirmed = cs.subSent
				h.wake(cs.key, "")
			}
			cs.pending = slices.DeleteFunc(cs.pending, func(p *pendingSub) bool {
				if p.want <= cs.subConfirmed {
					close(p.ready)
					return true
				}
				return false
			})
			h.forget(m.Channel, cs)
		case *redis.Message:
			if cs := h.chans[m.Channel]; cs != nil {
				h.wake(cs.key, m.Payload)
			}
		}
		h.mu.Unlock()
	}
}

// forget drops the state of a channel nobody needs once its subscription
// confirmations are all in. h.mu is held.
func (h *hub) forget(ch string, cs *channelState) {
	if cs.refs == 0 && !cs.subscribed && cs.subConfirmed == cs.subSent {
		delete(h.chans, ch)
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
	for _, cs := range h.chans {
		if cs.linger != nil && cs.linger.Stop() {
			h.timers.Done()
		}
		cs.linger = nil
	}
	h.mu.Unlock()
	h.timers.Wait()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}
