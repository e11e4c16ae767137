package redlock

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redishub"
	"github.com/haita/haita/lock"
)

// hub multiplexes the subscriptions of one Locker's waiters over one pub/sub
// connection to one instance: the first waiter of a key subscribes to the
// key's channel, the last one to leave unsubscribes. A message on a channel
// names the waiter whose turn it is, and wakes it alone; a resubscription
// after a reconnect wakes every waiter of the key (messages may have been
// lost).
type hub struct {
	wake func(key, owner string) // owner "": every waiter of key

	mu      sync.Mutex
	conn    *redishub.Conn
	chans   map[string]*channelState
	closed  bool
	lingers redishub.Lingers
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

	sub redishub.Confirmations
}

func newHub(c subscriber, wake func(key, owner string)) *hub {
	h := &hub{wake: wake, chans: make(map[string]*channelState)}
	h.conn = redishub.NewConn(c, func(ps *redis.PubSub) {
		h.read(ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	})
	return h
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
	h.lingers.Stop(&cs.linger)
	if err := cs.sub.Subscribe(func() error { return h.conn.Subscribe(ctx, ch) }); err != nil {
		h.mu.Unlock()
		h.unref(ch)
		return err
	}
	ready := cs.sub.Ready()
	h.mu.Unlock()

	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		h.mu.Lock()
		cs.sub.Abandon(ready)
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
	if cs.sub.Subscribed() && !h.closed && h.conn.Open() && cs.linger == nil {
		cs.linger = h.lingers.AfterFunc(linger, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if cs.linger == nil || cs.refs > 0 {
				return
			}
			cs.linger = nil
			if cs.sub.Subscribed() && !h.closed {
				cs.sub.Unsubscribe()
				_ = h.conn.Unsubscribe(context.Background(), ch)
			}
			h.forget(ch, cs)
		})
		return
	}
	h.forget(ch, cs)
}

// read dispatches confirmations and messages until the pub/sub closes.
func (h *hub) read(msgs <-chan any) {
	for m := range msgs {
		h.mu.Lock()
		switch m := m.(type) {
		case *redis.Subscription:
			cs := h.chans[m.Channel]
			if cs == nil || m.Kind != "subscribe" {
				break
			}
			if cs.sub.Confirm() {
				// A resubscription after a reconnect: messages may have
				// been lost meanwhile.
				h.wake(cs.key, "")
			}
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
	if cs.refs == 0 && !cs.sub.Subscribed() && cs.sub.Settled() {
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
	for _, cs := range h.chans {
		h.lingers.Stop(&cs.linger)
	}
	h.mu.Unlock()
	h.lingers.Wait()
	return h.conn.Close()
}
