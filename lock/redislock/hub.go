package redislock

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redishub"
	"github.com/haita/haita/lock"
)

// hub multiplexes the notifications of one Locker's waiters over one pub/sub
// connection. The first waiter of a key subscribes to two channels, the last
// one to leave unsubscribes: the key's grant channel, on which a release
// that hands the key over names the new owner and its token, and the key's
// keyspace channel, on which a server with keyspace notifications enabled
// reports that another client deleted the key or that it expired. A grant
// goes to the waiter it names, and nobody else is woken; a deletion or
// expiry pokes the key's local waiters, which ask Redis whether their turn
// has come (a waiter that learns from Redis that the key is free and an
// earlier waiter's turn pokes the others too). A resubscription after a
// reconnect pokes every waiter of the key: grants may have been lost
// meanwhile, and Redis keeps them.
type hub struct {
	db     int           // the database of keyspace channels
	linger time.Duration // how long a key nobody waits for stays subscribed

	mu      sync.Mutex
	conn    *redishub.Conn
	keys    map[string]*keyState
	chans   map[string]*keyState // by grant and keyspace channel
	owners  map[string]*waiter   // by owner
	tried   map[string]queued    // queued by Try, not yet waiting, by owner
	closed  bool
	lingers redishub.Lingers
}

// queued is what Try knew when it queued an owner: the key's subscription
// (ks, nil if none was in force) and its generation, and the key's PTTL.
type queued struct {
	ks     *keyState
	gen    int
	pttl   int64
	queued bool // Try queued the owner in Redis
}

// keyState is one Redis key, its channels and its local waiters.
type keyState struct {
	redisKey       string
	grantCh, kspCh string
	waiters        []*waiter // oldest first

	sub    redishub.Confirmations // of both channels, counted by the keyspace channel's
	gen    int                    // counts subscriptions and resubscriptions
	linger *time.Timer            // unsubscribes when nobody waits
	recent []grantNote            // grants to owners not (yet) waiting here
}

// grantNote is a grant message for an owner that had no waiter here when
// it came: Try may have queued it, and its Wait not have joined yet.
type grantNote struct {
	owner string
	g     handed
}

// maxRecent bounds a key's recent grant notes.
const maxRecent = 16

// handed is a grant a release made to a waiter.
type handed struct {
	token lock.Token
	// at is when the key's TTL started at the latest: when the releasing
	// request was sent, if this process sent it, or else when the
	// notification arrived.
	at time.Time
}

// waiter is one waiting Acquire of this Locker.
type waiter struct {
	h     *hub
	ks    *keyState
	owner string
	grant chan handed   // a release handed the key over; buffered
	poke  chan struct{} // the key may be free; buffered
}

func newHub(c Client, linger time.Duration) *hub {
	h := &hub{
		linger: linger,
		keys:   make(map[string]*keyState), chans: make(map[string]*keyState),
		owners: make(map[string]*waiter), tried: make(map[string]queued),
	}
	h.conn = redishub.NewConn(c, h.read)
	if o, ok := c.(interface{ Options() *redis.Options }); ok {
		h.db = o.Options().DB
	}
	return h
}

// snapshot returns what a Try that queues owner for redisKey now must
// remember for its Wait: the key's subscription if one is confirmed.
func (h *hub) snapshot(redisKey string) queued {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ks := h.keys[redisKey]; ks != nil && ks.sub.Subscribed() && ks.sub.Settled() {
		return queued{ks: ks, gen: ks.gen}
	}
	return queued{}
}

// remember records that Try queued owner.
func (h *hub) remember(owner string, q queued) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		q.queued = true
		h.tried[owner] = q
	}
}

// join registers a waiter for owner on redisKey and returns it once Redis
// has confirmed the key's subscriptions, so that no grant or deletion after
// join returns is missed. The caller must call leave. When Try queued owner
// while the same subscription was in force, join also returns true and what
// Try learnt: no grant since then can have been missed.
func (h *hub) join(ctx context.Context, redisKey, owner string) (*waiter, queued, bool, error) {
	h.mu.Lock()
	tried, wasTried := h.tried[owner]
	delete(h.tried, owner)
	if h.closed {
		h.mu.Unlock()
		return nil, tried, false, lock.ErrClosed
	}
	ks := h.keys[redisKey]
	if ks == nil {
		ks = &keyState{
			redisKey: redisKey,
			grantCh:  grantChannel(redisKey),
			kspCh:    "__keyspace@" + strconv.Itoa(h.db) + "__:" + redisKey,
		}
		h.keys[redisKey] = ks
		h.chans[ks.grantCh], h.chans[ks.kspCh] = ks, ks
	}
	w := &waiter{h: h, ks: ks, owner: owner, grant: make(chan handed, 1), poke: make(chan struct{}, 1)}
	ks.waiters = append(ks.waiters, w)
	h.owners[owner] = w
	h.lingers.Stop(&ks.linger)
	for i, n := range ks.recent {
		if n.owner == owner {
			w.give(n.g)
			ks.recent = slices.Delete(ks.recent, i, i+1)
			break
		}
	}
	continuous := wasTried && tried.ks == ks && tried.gen == ks.gen && ks.sub.Subscribed()
	err := ks.sub.Subscribe(func() error {
		ks.gen++
		return h.conn.Subscribe(ctx, ks.grantCh, ks.kspCh)
	})
	if err != nil {
		h.mu.Unlock()
		w.leave()
		return nil, tried, false, err
	}
	ready := ks.sub.Ready()
	h.mu.Unlock()
	select {
	case <-ready:
		return w, tried, continuous, nil
	case <-ctx.Done():
		h.mu.Lock()
		ks.sub.Abandon(ready)
		h.mu.Unlock()
		w.leave()
		return nil, tried, false, ctx.Err()
	}
}

// leave takes w out of its key's waiters. When it was the last, the key
// stays subscribed for the hub's linger time, so that a contender that
// waits again and again does not subscribe each time.
func (w *waiter) leave() {
	h, ks := w.h, w.ks
	h.mu.Lock()
	defer h.mu.Unlock()
	i := slices.Index(ks.waiters, w)
	if i < 0 {
		return
	}
	ks.waiters = slices.Delete(ks.waiters, i, i+1)
	if h.owners[w.owner] == w {
		delete(h.owners, w.owner)
	}
	if len(ks.waiters) > 0 {
		return
	}
	if ks.sub.Subscribed() && !h.closed && h.conn.Open() && ks.linger == nil {
		ks.linger = h.lingers.AfterFunc(h.linger, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if ks.linger == nil || len(ks.waiters) > 0 {
				return
			}
			ks.linger = nil
			h.unsubscribe(ks)
		})
		return
	}
	h.unsubscribe(ks)
}

// unsubscribe ends ks's subscription, now that nobody waits for the key.
// h.mu is held.
func (h *hub) unsubscribe(ks *keyState) {
	if ks.sub.Subscribed() && !h.closed && h.conn.Open() {
		ks.sub.Unsubscribe()
		ks.recent = nil
		_ = h.conn.Unsubscribe(context.Background(), ks.grantCh, ks.kspCh)
	}
	h.forget(ks)
}

// pokeOthers wakes the key's local waiters other than w: Redis said the
// key is free and an earlier waiter's turn, and that waiter may be any of
// them, since Redis's queue need not be in the order they joined here.
func (w *waiter) pokeOthers() {
	h, ks := w.h, w.ks
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range ks.waiters {
		if o != w {
			o.wake()
		}
	}
}

// hand delivers a grant to the local waiter of owner, if there is one: the
// release that made it was sent by this process.
func (h *hub) hand(owner string, g handed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.owners[owner]; w != nil {
		w.give(g)
	}
}

func (w *waiter) give(g handed) {
	select {
	case w.grant <- g:
	default: // a second notice of the same grant
	}
}

func (w *waiter) wake() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// pingAfter is how long the reader waits for a message before it pings the
// server, to find a connection that died without a word.
const pingAfter = 5 * time.Second

// read dispatches confirmations and messages until the pub/sub closes. It
// reads the connection itself rather than through go-redis's channel: one
// goroutine hop less between a grant and its waiter. A failed read or ping
// makes go-redis reconnect and resubscribe.
func (h *hub) read(ps *redis.PubSub) {
	ctx := context.Background()
	failures := 0
	for {
		m, err := ps.ReceiveTimeout(ctx, pingAfter)
		if errors.Is(err, redis.ErrClosed) {
			return
		}
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			_ = ps.Ping(ctx)
			continue
		}
		if err != nil {
			if failures++; failures > 1 {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		failures = 0
		h.mu.Lock()
		switch m := m.(type) {
		case *redis.Subscription:
			// Redis confirms the channels of one SUBSCRIBE in order: the
			// keyspace channel's confirmation is the last.
			ks := h.chans[m.Channel]
			if ks == nil || m.Kind != "subscribe" || m.Channel != ks.kspCh {
				break
			}
			if ks.sub.Confirm() {
				// A resubscription after a reconnect: grants may have been
				// lost meanwhile.
				ks.gen++
				for _, w := range ks.waiters {
					w.wake()
				}
			}
			h.forget(ks)
		case *redis.Message:
			ks := h.chans[m.Channel]
			if ks == nil {
				break
			}
			if m.Channel == ks.grantCh {
				owner, token, ok := strings.Cut(m.Payload, " ")
				n, err := strconv.ParseUint(token, 10, 64)
				if !ok || err != nil {
					break
				}
				g := handed{token: lock.Token(n), at: time.Now()}
				if w := h.owners[owner]; w != nil && w.ks == ks {
					w.give(g)
					break
				}
				if len(ks.recent) == maxRecent {
					ks.recent = slices.Delete(ks.recent, 0, 1)
				}
				ks.recent = append(ks.recent, grantNote{owner: owner, g: g})
				break
			}
			switch m.Payload {
			case "del", "expired", "evicted":
				// Whose turn it is now is Redis's queue's to say, and its
				// order need not be the order here: every waiter asks.
				for _, w := range ks.waiters {
					w.wake()
				}
			}
		}
		h.mu.Unlock()
	}
}

// forget drops the state of a key nobody waits for once its subscription
// confirmations are all in. h.mu is held.
func (h *hub) forget(ks *keyState) {
	if len(ks.waiters) == 0 && !ks.sub.Subscribed() && ks.sub.Settled() && h.keys[ks.redisKey] == ks {
		delete(h.keys, ks.redisKey)
		delete(h.chans, ks.grantCh)
		delete(h.chans, ks.kspCh)
	}
}

func (h *hub) close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for _, ks := range h.keys {
		h.lingers.Stop(&ks.linger)
	}
	h.tried = nil
	h.mu.Unlock()
	h.lingers.Wait()
	return h.conn.Close()
}
