package redislock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redishub"
	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/lock"
)

// NewSemaphore returns a [lock.Semaphore] with limit permits per key on one
// Redis deployment reached through c; see [New] for the client, the options
// and the default TTL. Each operation is one Lua script: a permit costs one
// round trip, as a mutex does.
//
// A key's permits live in three Redis keys that share a hash slot (the
// holders, the key's fields and the queue of waiters, named
// "haita:sem:{TAG}KEY:…" after the prefix) beside a fencing counter that
// never expires; they are apart from the mutex of the same key. Expiry is
// judged by the Redis server's clock. Waiters queue in Redis in arrival
// order (FIFO across processes) and are woken by pub/sub; a waiter's place
// is kept for a TTL after its last attempt, so the place of a waiter that
// died is given up within a TTL. It returns an error matching
// [lock.ErrInvalidOptions] for a nil c, a nil option, a bad limit or
// invalid opts.
func NewSemaphore(c Client, opts lock.Options, limit int, options ...Option) (*lock.Semaphore, error) {
	b, err := newSemBackend(c, options)
	if err != nil {
		return nil, err
	}
	return lock.NewSemaphore(b, opts, limit)
}

// NewRWLocker returns a [lock.RWLocker] on one Redis deployment: shared and
// exclusive leases on the same engine state as [NewSemaphore]'s, a writer
// taking every permit. A waiting writer holds back readers that come after
// it (see lock.RWLocker). It returns an error matching
// [lock.ErrInvalidOptions] for a nil c, a nil option or invalid opts.
func NewRWLocker(c Client, opts lock.Options, options ...Option) (*lock.RWLocker, error) {
	b, err := newSemBackend(c, options)
	if err != nil {
		return nil, err
	}
	return lock.NewRWLocker(b, opts)
}

var (
	//go:embed sem_common.lua
	semCommonLua string
	//go:embed sem_acquire.lua
	semAcquireLua string
	//go:embed sem_wait.lua
	semWaitLua string
	//go:embed sem_leave.lua
	semLeaveLua string
	//go:embed sem_refresh.lua
	semRefreshLua string
	//go:embed sem_release.lua
	semReleaseLua string

	semAcquireScript = redis.NewScript(semCommonLua + semAcquireLua)
	semWaitScript    = redis.NewScript(semCommonLua + semWaitLua)
	semLeaveScript   = redis.NewScript(semCommonLua + semLeaveLua)
	semRefreshScript = redis.NewScript(semCommonLua + semRefreshLua)
	semReleaseScript = redis.NewScript(semCommonLua + semReleaseLua)
)

func newSemBackend(c Client, options []Option) (*semBackend, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: redislock: nil client", lock.ErrInvalidOptions)
	}
	var cfg config
	for _, o := range options {
		if o == nil {
			return nil, fmt.Errorf("%w: redislock: nil Option", lock.ErrInvalidOptions)
		}
		o(&cfg)
	}
	return &semBackend{c: c, prefix: cfg.prefix, hub: newSemHub(c)}, nil
}

// semBackend implements lock.Backend and lock.Notifier for semaphores and
// reader-writer locks.
type semBackend struct {
	c      Client
	prefix string
	hub    *semHub
}

var (
	_ lock.Backend  = (*semBackend)(nil)
	_ lock.Notifier = (*semBackend)(nil)
)

func (b *semBackend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:          "redis",
		TTL:           true,
		Fencing:       true,
		FIFO:          true, // waiters queue in Redis
		LossDetection: true,
		FailoverSafe:  false,
		CrossProcess:  true,
		Notify:        true,
		Semaphore:     true,
		RWLock:        true,
	}
}

func (b *semBackend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *semBackend) Close() error { return b.hub.close() }

// keys returns the Redis keys of a semaphore key: holders, fields, queue
// and fencing counter, all in one hash slot.
func (b *semBackend) keys(key string) []string {
	k := b.prefix + key
	base := b.prefix + "haita:sem:{" + redisslot.Tag(redisslot.Slot(k)) + "}" + key
	return []string{base + ":holders", base + ":fields", base + ":queue", base + ":fence"}
}

func (b *semBackend) channel(key string) string { return "haita:released:" + b.keys(key)[0] }

// result turns a script's {code, value} answer into a grant or an error.
func result(req lock.Request, v []int64, err error) (lock.Grant, error) {
	switch {
	case err != nil:
		return lock.Grant{}, err
	case len(v) != 2:
		return lock.Grant{}, fmt.Errorf("redislock: semaphore script answered %v", v)
	case v[0] == 1:
		return lock.Grant{Token: lock.Token(v[1])}, nil
	case v[0] == 2:
		return lock.Grant{}, &lock.LimitError{Key: req.Key, Have: int(v[1]), Want: req.Share.Limit}
	case v[1] < 0:
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	return lock.Grant{}, &lock.HeldError{Key: req.Key, ExpiresAt: time.Now().Add(time.Duration(v[1]) * time.Millisecond)}
}

func (b *semBackend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	waiting := "0"
	if b.hub.waiting(req.Owner) {
		waiting = "1"
	}
	v, err := semAcquireScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), ms(req.TTL),
		req.Share.Limit, req.Share.Weight, waiting, b.channel(req.Key)).Int64Slice()
	return result(req, v, err)
}

func (b *semBackend) Refresh(ctx context.Context, req lock.Request) error {
	n, err := semRefreshScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), ms(req.TTL)).Int64()
	switch {
	case err != nil:
		return err
	case n == 0:
		return lock.ErrNotHeld
	}
	return nil
}

func (b *semBackend) Release(ctx context.Context, req lock.Request) error {
	n, err := semReleaseScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), b.channel(req.Key)).Int64()
	switch {
	case err != nil:
		return err
	case n < 0:
		return lock.ErrNotHeld
	}
	return nil
}

// Subscribe implements lock.Notifier: once Redis confirms the subscription
// to the key's channel, the waiter takes its place in the key's queue in
// Redis; closing the subscription takes it out.
func (b *semBackend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	s, err := b.hub.subscribe(ctx, b.channel(req.Key), req.Owner)
	if err != nil {
		return nil, err
	}
	v, err := semWaitScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), ms(req.TTL), req.Share.Limit).Int64Slice()
	if _, rerr := result(req, v, err); err != nil || !errors.Is(rerr, lock.ErrNotAcquired) {
		s.close()
		if err == nil {
			err = rerr
		}
		return nil, err
	}
	s.leave = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = semLeaveScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), b.channel(req.Key)).Err()
	}
	return s, nil
}

// semHub shares one pub/sub connection among a backend's waiters. Unlike
// the mutex's hub it wakes every local waiter of a key on a message: the
// queue in Redis decides whose turn it is.
type semHub struct {
	mu     sync.Mutex
	conn   *redishub.Conn
	chans  map[string]*semChannel
	owners map[lock.Owner]bool // the waiting owners
	closed bool
}

func newSemHub(c Client) *semHub {
	h := &semHub{chans: make(map[string]*semChannel)}
	h.conn = redishub.NewConn(c, func(ps *redis.PubSub) {
		h.read(ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	})
	return h
}

// semChannel is one channel: its subscribers and its SUBSCRIBE
// confirmations, counted as the mutex's hub does.
type semChannel struct {
	subs map[*semSub]bool
	sub  redishub.Confirmations
}

// forget drops the state of a channel nobody needs once its confirmations
// are all in. h.mu is held.
func (h *semHub) forget(ch string, cs *semChannel) {
	if len(cs.subs) == 0 && !cs.sub.Subscribed() && cs.sub.Settled() {
		delete(h.chans, ch)
	}
}

// semSub is one waiter's subscription.
type semSub struct {
	h     *semHub
	ch    string
	owner lock.Owner
	c     chan struct{}
	leave func() // takes the waiter out of the queue in Redis
	once  sync.Once
}

func (s *semSub) C() <-chan struct{} { return s.c }

func (s *semSub) Close() {
	s.once.Do(func() {
		if s.leave != nil {
			s.leave()
		}
		s.close()
	})
}

// close lets go of the channel.
func (s *semSub) close() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.owners, s.owner)
	cs := h.chans[s.ch]
	if cs == nil {
		return
	}
	delete(cs.subs, s)
	if len(cs.subs) == 0 && cs.sub.Subscribed() && !h.closed && h.conn.Open() {
		cs.sub.Unsubscribe()
		_ = h.conn.Unsubscribe(context.Background(), s.ch)
	}
	h.forget(s.ch, cs)
}

func (h *semHub) waiting(o lock.Owner) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.owners[o]
}

// subscribe returns a subscription to ch once Redis has confirmed it.
func (h *semHub) subscribe(ctx context.Context, ch string, owner lock.Owner) (*semSub, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, lock.ErrClosed
	}
	s := &semSub{h: h, ch: ch, owner: owner, c: make(chan struct{}, 1)}
	cs := h.chans[ch]
	if cs == nil {
		cs = &semChannel{subs: make(map[*semSub]bool)}
		h.chans[ch] = cs
	}
	if err := cs.sub.Subscribe(func() error { return h.conn.Subscribe(ctx, ch) }); err != nil {
		h.forget(ch, cs)
		h.mu.Unlock()
		return nil, err
	}
	cs.subs[s] = true
	if h.owners == nil {
		h.owners = make(map[lock.Owner]bool)
	}
	h.owners[owner] = true
	ready := cs.sub.Ready()
	h.mu.Unlock()
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		s.close()
		return nil, ctx.Err()
	}
}

// read dispatches confirmations and messages until the pub/sub closes.
func (h *semHub) read(msgs <-chan any) {
	for m := range msgs {
		h.mu.Lock()
		switch m := m.(type) {
		case *redis.Subscription:
			cs := h.chans[m.Channel]
			if cs == nil || m.Kind != "subscribe" {
				break
			}
			if cs.sub.Confirm() { // resubscribed after a reconnect
				cs.wakeAll()
			}
			h.forget(m.Channel, cs)
		case *redis.Message:
			if cs := h.chans[m.Channel]; cs != nil {
				cs.wakeAll()
			}
		}
		h.mu.Unlock()
	}
}

func (cs *semChannel) wakeAll() {
	for s := range cs.subs {
		select {
		case s.c <- struct{}{}:
		default:
		}
	}
}

func (h *semHub) close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	return h.conn.Close()
}
