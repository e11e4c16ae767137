package redislock

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisholder"
	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/lock"
)

// Client is the part of go-redis a Locker uses: scripts, and pub/sub for
// waking waiters. *redis.Client, *redis.ClusterClient, *redis.Ring and
// every redis.UniversalClient satisfy it.
type Client interface {
	redis.Scripter
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

var _ Client = redis.UniversalClient(nil)

// Option configures what [New] adds to [lock.Options] for Redis.
type Option func(*config)

type config struct {
	prefix string
}

// WithPrefix prepends prefix to every lock key to form the Redis key. The
// default is none: the Redis key is the lock key, as redsync, node-redlock
// and redis-py name it.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// Locker is a [lock.Locker] on one Redis deployment; see [New].
type Locker struct {
	lock.Locker
}

var _ lock.Locker = (*Locker)(nil)

// DefaultTTL is the TTL of a lease when Options.TTL is zero.
const DefaultTTL = 30 * time.Second

// linger is how long a Locker stays subscribed to a key after its last
// waiter left: a contender that waits again soon does not pay for a
// SUBSCRIBE and an UNSUBSCRIBE each time.
const linger = time.Second

var (
	//go:embed acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(acquireLua)
	//go:embed release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
	//go:embed refresh.lua
	refreshLua    string
	refreshScript = redis.NewScript(refreshLua)
	//go:embed wait.lua
	waitLua    string
	waitScript = redis.NewScript(waitLua)
)

// New returns a Locker on one Redis deployment reached through c: a single
// server, Sentinel or Cluster. The default TTL is [DefaultTTL]. A waiter
// that no notification reaches asks Redis again after opts.PollInterval
// (default 1s), at the holder's expiry, and at a third of its own TTL,
// which keeps its place in the queue. The Locker does not close c. It
// returns an error matching [lock.ErrInvalidOptions] for a nil c, a nil
// option or invalid opts.
//
// The Locker keeps one pub/sub connection, opened when a first Acquire has
// to wait, shared by all its waiters; Close closes it.
func New(c Client, opts lock.Options, options ...Option) (*Locker, error) {
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
	b := &backend{c: c, prefix: cfg.prefix, poll: opts.PollInterval, hub: newHub(c, linger)}
	b.q = lock.NewWaitQueue(b.releaseOrphan)
	if b.poll <= 0 {
		b.poll = time.Second
	}
	l, err := lock.New(b, opts)
	if err != nil {
		return nil, err
	}
	return &Locker{l}, nil
}

// backend implements lock.Backend and lock.Queuer on Redis.
type backend struct {
	c      Client
	prefix string
	poll   time.Duration
	hub    *hub
	// q orders this Locker's waiters of a key: only the first asks Redis
	// (and queues there), and a release hands the key straight to it, up
	// to lock.MaxHandoffs times in a row, after which the key goes to
	// Redis's queue, where other processes' waiters are.
	q *lock.WaitQueue
}

var (
	_ lock.Backend     = (*backend)(nil)
	_ lock.Queuer      = (*backend)(nil)
	_ lock.WaitCounter = (*backend)(nil)
)

func (b *backend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:          "redis",
		TTL:           true,
		Fencing:       true,
		FIFO:          true,  // haita's waiters queue in Redis, across processes
		LossDetection: true,  // refresh compares the owner and reports the key gone
		FailoverSafe:  false, // replication is asynchronous: a failover can lose a grant
		CrossProcess:  true,
		Notify:        true,
	}
}

func (b *backend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *backend) Close() error { return b.hub.close() }

// keys returns the Redis key of a lock key, the fencing counter in its hash
// slot, the key's queue and waiters' hash, and its holder record (see
// holder.go), all in the same slot.
func (b *backend) keys(key string) []string {
	k := b.prefix + key
	return []string{
		k,
		redisslot.CounterKey(k, ":"+b.prefix+"haita:fence"),
		redisslot.CounterKey(k, ":haita:q:"+k),
		redisslot.CounterKey(k, ":haita:w:"+k),
		redisholder.Key(k, b.prefix),
	}
}

// grantChannel is the channel on which a release that hands redisKey to a
// waiter names it.
func grantChannel(redisKey string) string { return "haita:released:" + redisKey }

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// Try takes the key if it is free and nobody queues for it. A waiting
// request (req.Wait) that finds it held joins Redis's queue in the same
// round trip, and Wait then only waits.
func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	switch g, v := b.q.Gate(req); v {
	case lock.HandedOver:
		return g, nil
	case lock.Queued:
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	g, err := b.try(ctx, req)
	if err == nil {
		b.q.Took(req)
	}
	return g, err
}

func (b *backend) try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	if req.Wait {
		return b.tryQueue(ctx, req)
	}
	n, err := acquireScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), ms(req.TTL), req.Holder).Int64()
	switch {
	case err != nil:
		return lock.Grant{}, err
	case n > 0:
		return lock.Grant{Token: lock.Token(n)}, nil
	case n == -1:
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	default:
		pttl := time.Duration(-2-n) * time.Millisecond
		return lock.Grant{}, &lock.HeldError{Key: req.Key, ExpiresAt: time.Now().Add(pttl)}
	}
}

// tryQueue is Try for a waiting request: one step of the wait script.
func (b *backend) tryQueue(ctx context.Context, req lock.Request) (lock.Grant, error) {
	snap := b.hub.snapshot(b.prefix + req.Key)
	token, pttl, err := b.step(ctx, req)
	switch {
	case err != nil:
		return lock.Grant{}, err
	case token > 0:
		return lock.Grant{Token: lock.Token(token), Validity: time.Duration(pttl) * time.Millisecond}, nil
	}
	snap.pttl = pttl
	b.hub.remember(req.Owner.String(), snap)
	held := &lock.HeldError{Key: req.Key}
	if pttl >= 0 {
		held.ExpiresAt = time.Now().Add(time.Duration(pttl) * time.Millisecond)
	}
	return lock.Grant{}, held
}

// step runs the wait script once for req: a token > 0 when req holds the
// key now, else 0 and the key's PTTL in ms (-1: no expiry; -2: free, but an
// earlier waiter's turn).
func (b *backend) step(ctx context.Context, req lock.Request) (token, pttl int64, err error) {
	res, err := waitScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), ms(req.TTL), req.Holder).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("redislock: wait script answered %v", res)
	}
	if err != nil {
		return 0, 0, err
	}
	return res[0], res[1], nil
}

func (b *backend) Refresh(ctx context.Context, req lock.Request) error {
	n, err := refreshScript.Run(ctx, b.c, refreshKeys(b.keys(req.Key)), req.Owner.String(), ms(req.TTL)).Int64()
	switch {
	case err != nil:
		return err
	case n == 0:
		return lock.ErrNotHeld
	}
	return nil
}

// Release frees the key, or hands it to the first waiter in Redis's queue
// inside the release script: one round trip, and a waiter of this Locker
// learns of it when the answer comes back.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	h := b.q.Handoff(req)
	if h == nil {
		return b.release(ctx, req)
	}
	sent := time.Now()
	res, err := releaseScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), grantChannel(b.prefix+req.Key), h.To.Owner.String(), ms(h.To.TTL), h.To.Holder).Slice()
	var n int64
	if err == nil && len(res) > 0 {
		n, _ = res[0].(int64)
	}
	switch {
	case err == nil && n > 0:
		h.Done(lock.Grant{Token: lock.Token(n)}, sent)
		return nil
	case err != nil:
		// The key may have gone to the waiter: take it back for it.
		b.releaseOrphan(h.To)
	}
	h.Failed()
	if err != nil {
		return err
	}
	return lock.ErrNotHeld
}

// release frees the key for Redis's queue: the first waiter there gets it,
// or nobody if none waits.
func (b *backend) release(ctx context.Context, req lock.Request) error {
	sent := time.Now()
	res, err := releaseScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), grantChannel(b.prefix+req.Key), "", "0", "").Slice()
	if err == nil && len(res) == 0 {
		err = fmt.Errorf("redislock: release script answered %v", res)
	}
	if err != nil {
		return err
	}
	switch n, _ := res[0].(int64); {
	case n < 0:
		return lock.ErrNotHeld
	case n > 0 && len(res) == 2:
		if next, ok := res[1].(string); ok {
			b.hub.hand(next, handed{token: lock.Token(n), at: sent})
		}
	}
	// The key went to Redis's queue or was freed: the first waiter here
	// asks Redis for its turn.
	b.q.Wake(req.Key)
	return nil
}

// releaseOrphan frees a key handed to a waiter that has left, with a fresh
// context: the caller's may be why the waiter left.
func (b *backend) releaseOrphan(req lock.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.release(ctx, req)
}

// Wait waits for req's turn in Redis's queue, which Try put it in: a
// release hands the key over and names the new owner on the key's grant
// channel, or the key is deleted or expires and the first waiter takes it.
// Unless Try queued req while this Locker's subscription to the key was in
// force already (so that no grant since can have been missed), it asks
// Redis once first.
func (b *backend) Wait(ctx context.Context, req lock.Request) (lock.Grant, error) {
	start := time.Now()
	local := b.q.Join(req)
	defer local.Close()
	var grant <-chan handed
	var poke <-chan struct{}
	w, tried, continuous, err := b.hub.join(ctx, b.prefix+req.Key, req.Owner.String())
	switch {
	case err == nil:
		defer w.leave()
		grant, poke = w.grant, w.poke
	case ctx.Err() != nil:
		return lock.Grant{}, b.leave(ctx, req)
	}
	// Without notifications the poll below still finds the key.
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	pttl := tried.pttl
	asked := continuous // Try's answer is as good as asking
	// Try may have queued req in Redis while another waiter of this Locker
	// leads here (both found no local waiter and asked Redis). Redis may
	// then hand the key to req before req's subscription was in force, and
	// such a grant reaches nobody: req starts as if poked, and asks once,
	// leading or not.
	poked := tried.queued && !continuous
	ask := func() (lock.Grant, bool, error) {
		sent := time.Now()
		var token int64
		token, pttl, err = b.step(ctx, req)
		switch {
		case err != nil && ctx.Err() != nil:
			return lock.Grant{}, true, b.leave(ctx, req)
		case err != nil:
			return lock.Grant{}, true, err
		case token > 0:
			b.q.Took(req)
			return lock.Grant{Token: lock.Token(token), Validity: sent.Sub(start) + time.Duration(pttl)*time.Millisecond}, true, nil
		}
		return lock.Grant{}, false, nil
	}
	for {
		d := b.poll
		switch g, v := b.q.Gate(req); v {
		case lock.HandedOver:
			return lock.Grant{Token: g.Token, Validity: time.Since(start) + g.Validity}, nil
		case lock.Proceed:
			// First here: ask Redis, which queues req.
			if !asked {
				if g, done, err := ask(); done {
					return g, err
				}
			}
			if w != nil && pttl == -2 {
				w.pokeOthers()
			}
			d = min(d, req.TTL/3)
			if pttl >= 0 {
				d = min(d, time.Duration(pttl+1)*time.Millisecond)
			}
		case lock.Queued:
			// A poke says the key may be free and req's turn in Redis,
			// whose queue need not be in this Locker's order: req asks,
			// leading here or not.
			if poked {
				if g, done, err := ask(); done {
					return g, err
				}
			}
		}
		asked = false
		poked = false
		timer.Reset(d)
		select {
		case g := <-grant:
			b.q.Took(req)
			// A grant that came before Wait started has less left.
			return lock.Grant{Token: g.token, Validity: max(g.at.Sub(start)+req.TTL, time.Nanosecond)}, nil
		case <-local.C():
		case <-poke:
			poked = true
		case <-timer.C:
		case <-ctx.Done():
			return lock.Grant{}, b.leave(ctx, req)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// leave takes an abandoned wait out of Redis's queue, and releases the key
// (handing it on) if a release gave it to req meanwhile, with a fresh
// context: ctx, the wait's, has ended. It returns ctx's error.
func (b *backend) leave(ctx context.Context, req lock.Request) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = b.release(rctx, req)
	return ctx.Err()
}

// Waiting implements lock.WaitCounter: the waiters of this Locker that
// Redis has queued for key.
func (b *backend) Waiting(key string) int { return b.q.Waiting(key) }
