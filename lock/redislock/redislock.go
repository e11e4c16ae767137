package redislock

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

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
)

// New returns a Locker on one Redis deployment reached through c: a single
// server, Sentinel or Cluster. The default TTL is [DefaultTTL] and the
// fallback poll while waiting is 1s. The Locker does not close c. It returns
// an error matching [lock.ErrInvalidOptions] for a nil c, a nil option or
// invalid opts.
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
	b := &backend{c: c, prefix: cfg.prefix}
	b.q = lock.NewWaitQueue(b.releaseOrphan)
	b.hub = newHub(c, b.q)
	l, err := lock.New(b, opts)
	if err != nil {
		return nil, err
	}
	return &Locker{l}, nil
}

// backend implements lock.Backend and lock.Notifier on Redis.
type backend struct {
	c      Client
	prefix string
	q      *lock.WaitQueue // the Locker's local waiters
	hub    *hub
}

var (
	_ lock.Backend  = (*backend)(nil)
	_ lock.Notifier = (*backend)(nil)
)

func (b *backend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:          "redis",
		TTL:           true,
		Fencing:       true,
		FIFO:          false,
		LossDetection: true,  // refresh compares the owner and reports the key gone
		FailoverSafe:  false, // replication is asynchronous: a failover can lose a grant
		CrossProcess:  true,
		Notify:        true,
	}
}

func (b *backend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *backend) Close() error { return b.hub.close() }

// keys returns the Redis key of a lock key, the fencing counter in its
// hash slot and the key's holder record (see holder.go).
func (b *backend) keys(key string) []string {
	k := b.prefix + key
	return []string{k, redisslot.CounterKey(k, ":"+b.prefix+"haita:fence"), holderKey(k, b.prefix)}
}

func channel(redisKey string) string { return "haita:released:" + redisKey }

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	switch g, v := b.q.Gate(req); v {
	case lock.HandedOver:
		return g, nil
	case lock.Queued:
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	n, err := acquireScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), ms(req.TTL), req.Holder).Int64()
	switch {
	case err != nil:
		return lock.Grant{}, err
	case n > 0:
		b.q.Took(req)
		return lock.Grant{Token: lock.Token(n)}, nil
	case n == -1:
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	default:
		pttl := time.Duration(-2-n) * time.Millisecond
		return lock.Grant{}, &lock.HeldError{Key: req.Key, ExpiresAt: time.Now().Add(pttl)}
	}
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

// Release frees the key, or hands it straight to the first local waiter
// (see [lock.WaitQueue]) inside the release script: one round trip, and the
// waiter needs none.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	redisKey := b.prefix + req.Key
	h := b.q.Handoff(req)
	nextOwner, nextTTL, nextHolder := "", "0", ""
	if h != nil {
		nextOwner, nextTTL, nextHolder = h.To.Owner.String(), ms(h.To.TTL), h.To.Holder
	}
	sent := time.Now()
	n, err := releaseScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), channel(redisKey), nextOwner, nextTTL, nextHolder).Int64()
	if h == nil {
		switch {
		case err != nil:
			return err
		case n < 0:
			return lock.ErrNotHeld
		}
		return nil
	}
	if err == nil && n > 0 {
		h.Done(lock.Grant{Token: lock.Token(n)}, sent)
		return nil
	}
	if err != nil {
		// The key may have gone to the waiter: take it back for it.
		b.releaseOrphan(h.To)
	}
	h.Failed()
	if err != nil {
		return err
	}
	return lock.ErrNotHeld
}

// releaseOrphan frees a key handed to a waiter that has left, with a fresh
// context: the caller's may be why the waiter left.
func (b *backend) releaseOrphan(req lock.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	redisKey := b.prefix + req.Key
	_ = releaseScript.Run(ctx, b.c, b.keys(req.Key), req.Owner.String(), channel(redisKey), "", "0").Err()
}

// Subscribe implements lock.Notifier on the Locker's shared pub/sub
// connection. The subscription is confirmed by Redis before it returns.
func (b *backend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	return b.hub.subscribe(ctx, channel(b.prefix+req.Key), req)
}
