package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
)

// DefaultPrefix is the key prefix used unless [WithPrefix] sets another.
const DefaultPrefix = "haita/lock/"

// DefaultTTL is the lease TTL used when Options.TTL is zero.
const DefaultTTL = 30 * time.Second

// Client is what a Locker needs from etcd: *clientv3.Client satisfies it.
// Tests may wrap one to inject faults.
type Client interface {
	clientv3.KV
	clientv3.Lease
	clientv3.Watcher
}

// Option configures what [New] adds to [lock.Options] for etcd.
type Option func(*config)

type config struct {
	prefix string
}

// WithPrefix is prepended to every key; each lock key k occupies the keys
// prefix + k + "\x00" + owner, one per holder or waiter. The default is
// [DefaultPrefix]. It must be valid UTF-8 without NUL bytes.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// Locker is a [lock.Locker] on etcd; see [New].
type Locker struct {
	lock.Locker
}

var _ lock.Locker = (*Locker)(nil)

// New returns a Locker whose leases are keys in etcd bound to etcd leases.
// opts.TTL must be a whole number of seconds (etcd leases count in seconds)
// of at least one second; zero selects [DefaultTTL]. The server raises a TTL
// below its minimum (1.5 election timeouts, rounded up: 2s with etcd's
// defaults) to that minimum, which only makes a lost holder's key free
// later: the lease's local deadline still follows the TTL.
//
// The Locker is safe for concurrent use. The caller must Close it; Close
// does not close cli. It returns an error matching [lock.ErrInvalidOptions]
// for a nil cli, a nil or invalid option, or invalid opts.
func New(cli Client, opts lock.Options, options ...Option) (*Locker, error) {
	if cli == nil {
		return nil, fmt.Errorf("%w: etcdlock: nil client", lock.ErrInvalidOptions)
	}
	var cfg config
	for _, o := range options {
		if o == nil {
			return nil, fmt.Errorf("%w: etcdlock: nil Option", lock.ErrInvalidOptions)
		}
		o(&cfg)
	}
	if opts.TTL != 0 && (opts.TTL < time.Second || opts.TTL%time.Second != 0) {
		return nil, fmt.Errorf("%w: etcdlock: TTL %v is not a whole number of seconds of at least 1s", lock.ErrInvalidOptions, opts.TTL)
	}
	if strings.IndexByte(cfg.prefix, 0) >= 0 || !utf8.ValidString(cfg.prefix) {
		return nil, fmt.Errorf("%w: etcdlock: prefix must be valid UTF-8 without NUL bytes", lock.ErrInvalidOptions)
	}
	b := &backend{cli: cli, prefix: cfg.prefix, leases: make(map[lock.Owner]bound)}
	if b.prefix == "" {
		b.prefix = DefaultPrefix
	}
	l, err := lock.New(b, opts)
	if err != nil {
		return nil, err
	}
	b.w = newWatcher(cli)
	return &Locker{l}, nil
}

// backend implements lock.Backend and lock.Queuer.
type backend struct {
	cli    Client
	prefix string
	w      *watcher // the long-lived watches of keys with waiters
	wg     sync.WaitGroup

	mu     sync.Mutex
	leases map[lock.Owner]bound // granted, not yet released
	spares []spare              // released leases bound to nothing, oldest first
	closed bool
}

// maxSpares bounds the released leases a Locker keeps for later acquires:
// enough for the holder and waiters of a busy key in one process; a lease
// released beyond it is revoked.
const maxSpares = 8

// spare is a released etcd lease kept for the next acquire, so that an
// acquire does not wait for a Grant's Raft round and a release does not
// need a Revoke.
type spare struct {
	id   clientv3.LeaseID
	ttl  time.Duration
	sent time.Time // when its TTL last started, as far as this process knows
}

// bound is a lease bound to one owner.
type bound struct {
	id   clientv3.LeaseID
	sent time.Time // when its TTL last started, as far as this process knows
}

var (
	_ lock.Backend = (*backend)(nil)
	_ lock.Queuer  = (*backend)(nil)
)

func (b *backend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:          "etcd",
		TTL:           true,
		Fencing:       true,
		FIFO:          true,
		LossDetection: true, // KeepAliveOnce reports a revoked or expired lease
		FailoverSafe:  true,
		CrossProcess:  true,
		Notify:        true,
	}
}

func (b *backend) DefaultTTL() time.Duration { return DefaultTTL }

// queue is the prefix of every holder's and waiter's key for lock key k:
// NUL cannot occur in a lock key, so no other key's queue shares it.
func (b *backend) queue(key string) string { return b.prefix + key + "\x00" }

func (b *backend) member(req lock.Request) string { return b.queue(req.Key) + req.Owner.String() }

// enqueue binds a lease to req.Owner and creates its key in the queue. It
// returns the key's create revision, the keys ahead of it at that revision
// (every other key in the queue), and when the lease's TTL started.
func (b *backend) enqueue(ctx context.Context, req lock.Request) (rev int64, ahead map[string]bool, leaseSent time.Time, err error) {
	id, leaseSent, err := b.lease(ctx, req)
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	me := b.member(req)
	// In the transaction the read sees the put: every other key in the
	// queue was created before this one.
	resp, err := b.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(me), "=", 0)).
		Then(clientv3.OpPut(me, req.Holder, clientv3.WithLease(id)),
			clientv3.OpGet(b.queue(req.Key), clientv3.WithPrefix(), clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	if !resp.Succeeded {
		return 0, nil, time.Time{}, fmt.Errorf("etcdlock: key %q exists already", me)
	}
	rev = resp.Header.Revision
	ahead = make(map[string]bool)
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if kv.CreateRevision < rev {
			ahead[string(kv.Key)] = true
		}
	}
	return rev, ahead, leaseSent, nil
}

func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	sent := time.Now()
	q := b.queue(req.Key)
	if b.w.watched(q) {
		// The key had waiters here lately, so it is likely held: look
		// first. A transaction with a write goes through Raft even when
		// its comparison fails; a read does not.
		resp, err := b.cli.Get(ctx, q, clientv3.WithFirstCreate()...)
		if err != nil {
			return lock.Grant{}, fmt.Errorf("etcdlock: acquire: %w", err)
		}
		if len(resp.Kvs) > 0 {
			return lock.Grant{}, &lock.HeldError{Key: req.Key, Holder: string(resp.Kvs[0].Value)}
		}
	}
	id, leaseSent, err := b.lease(ctx, req)
	if err != nil {
		return lock.Grant{}, fmt.Errorf("etcdlock: acquire: %w", err)
	}
	// Create the key only if the queue is empty: a TryAcquire never takes
	// a place in the queue, and a failed one writes nothing.
	resp, err := b.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(q), "=", 0).WithPrefix()).
		Then(clientv3.OpPut(b.member(req), req.Holder, clientv3.WithLease(id))).
		Else(clientv3.OpGet(q, clientv3.WithFirstCreate()...)).
		Commit()
	if err != nil {
		return lock.Grant{}, fmt.Errorf("etcdlock: acquire: %w", err)
	}
	if !resp.Succeeded {
		b.unbind(req.Owner, id, leaseSent, req.TTL)
		he := &lock.HeldError{Key: req.Key}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			he.Holder = string(kvs[0].Value)
		}
		return lock.Grant{}, he
	}
	return lock.Grant{Token: lock.Token(resp.Header.Revision), Validity: leaseSent.Add(req.TTL).Sub(sent)}, nil
}

// Wait queues for req.Key: it creates its key, reading the keys ahead of it
// (created before it) in the same transaction, and crosses them off as the
// delete events of the key's long-lived watch come in until none is left.
// The watch is in effect before the key is created, so no delete after the
// read is missed, and none needs a read of its own.
func (b *backend) Wait(ctx context.Context, req lock.Request) (lock.Grant, error) {
	start := time.Now()
	g, err := b.wait(ctx, req, start)
	if err != nil {
		// Leave the queue, or give back a grant that raced with the end of
		// ctx, with a context of our own: ctx may be why we stopped.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Release(cctx, req)
		if ctx.Err() != nil {
			return lock.Grant{}, ctx.Err()
		}
		return lock.Grant{}, fmt.Errorf("etcdlock: acquire: %w", err)
	}
	return g, nil
}

func (b *backend) wait(ctx context.Context, req lock.Request, start time.Time) (lock.Grant, error) {
	qw, err := b.w.join(ctx, b.queue(req.Key))
	if err != nil {
		return lock.Grant{}, err
	}
	defer b.w.leave(qw)
	rev, ahead, renewed, err := b.enqueue(ctx, req)
	if err != nil {
		return lock.Grant{}, err
	}
	// ahead is the keys created before ours that exist at revision seen;
	// deletes after seen come from the watch. No key created later can get
	// ahead of ours.
	seen := rev
	me := b.member(req)
	id := b.leaseOf(req.Owner).id
	keepAlive := time.NewTicker(req.TTL / 3)
	defer keepAlive.Stop()
	resync := false
	for len(ahead) > 0 {
		select {
		case <-ctx.Done():
			return lock.Grant{}, ctx.Err()
		case <-keepAlive.C:
			sent := time.Now()
			_, err := b.cli.KeepAliveOnce(ctx, id)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return lock.Grant{}, fmt.Errorf("the waiting lease expired: %w", err)
			}
			if err == nil {
				renewed = sent
			}
			// Another error (a member down) is retried at the next tick.
			// Read the queue again as well: cheap insurance against a
			// watch that went silent.
			resync = true
		case <-qw.c:
		}
		evs, lost := b.w.take(qw)
		if resync || lost {
			resync = false
			if err := b.w.await(ctx, qw); err != nil {
				return lock.Grant{}, err
			}
			ahead, seen, err = b.keysAhead(ctx, me, rev)
			if err != nil {
				return lock.Grant{}, err
			}
			// Deletes taken now at or before seen are in the count;
			// later ones are applied below.
		}
		for _, ev := range evs {
			if ev.rev <= seen {
				continue
			}
			if ev.key == me {
				return lock.Grant{}, fmt.Errorf("%w: the waiting lease expired and its queue key is gone", lock.ErrLost)
			}
			delete(ahead, ev.key)
		}
	}
	if err := ctx.Err(); err != nil {
		return lock.Grant{}, err
	}
	// Counted from Wait's start, which is after the Locker's: an earlier
	// deadline than the server's.
	return lock.Grant{Token: lock.Token(rev), Validity: renewed.Add(req.TTL).Sub(start)}, nil
}

// keysAhead reads, in one transaction, that our key me (created at rev) still
// exists and which keys are ahead of it, and returns the revision it read
// at.
func (b *backend) keysAhead(ctx context.Context, me string, rev int64) (ahead map[string]bool, at int64, err error) {
	queue := me[:strings.IndexByte(me, 0)+1]
	resp, err := b.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(me), "=", rev)).
		Then(clientv3.OpGet(queue, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithMaxCreateRev(rev-1))).
		Commit()
	if err != nil {
		return nil, 0, err
	}
	if !resp.Succeeded {
		return nil, 0, fmt.Errorf("%w: the waiting lease expired and its queue key is gone", lock.ErrLost)
	}
	ahead = make(map[string]bool)
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if kv.CreateRevision < rev {
			ahead[string(kv.Key)] = true
		}
	}
	return ahead, resp.Header.Revision, nil
}

func (b *backend) Refresh(ctx context.Context, req lock.Request) error {
	bd := b.leaseOf(req.Owner)
	if bd.id == clientv3.NoLease {
		return fmt.Errorf("etcdlock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	sent := time.Now()
	_, err := b.cli.KeepAliveOnce(ctx, bd.id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("etcdlock: refresh %q: %w (lease expired)", req.Key, lock.ErrNotHeld)
	}
	if err != nil {
		return fmt.Errorf("etcdlock: refresh: %w", err)
	}
	b.mu.Lock()
	if cur, ok := b.leases[req.Owner]; ok && cur.id == bd.id {
		b.leases[req.Owner] = bound{id: bd.id, sent: sent}
	}
	b.mu.Unlock()
	return nil
}

// Release deletes the key if it still exists, which wakes the next
// waiter's watch, and keeps the lease, now bound to nothing, as a spare for
// a later acquire (or revokes it): one Raft round, like a Revoke, and none
// for the next acquire's lease.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	bd := b.leaseOf(req.Owner)
	if bd.id == clientv3.NoLease {
		return fmt.Errorf("etcdlock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	me := b.member(req)
	resp, err := b.cli.Delete(ctx, me)
	if err != nil {
		// The key frees itself when the lease expires, or the Locker
		// retries this Release.
		return fmt.Errorf("etcdlock: release: %w", err)
	}
	if resp.Deleted == 0 {
		b.mu.Lock()
		delete(b.leases, req.Owner)
		b.mu.Unlock()
		b.revokeLater(bd.id)
		return fmt.Errorf("etcdlock: release %q: %w (lease expired)", req.Key, lock.ErrNotHeld)
	}
	b.unbind(req.Owner, bd.id, bd.sent, req.TTL)
	return nil
}

func (b *backend) leaseOf(o lock.Owner) bound {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leases[o]
}

// lease binds an etcd lease of req.TTL to req.Owner: the newest spare if
// it is fresh (its TTL started less than a quarter TTL ago), else a new
// grant. Stale spares are revoked: every older one is staler. It returns
// when the lease's TTL started.
func (b *backend) lease(ctx context.Context, req lock.Request) (clientv3.LeaseID, time.Time, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, time.Time{}, lock.ErrClosed
	}
	var stale []spare
	for n := len(b.spares); n > 0; n-- {
		sp := b.spares[n-1]
		b.spares = b.spares[:n-1]
		if sp.ttl == req.TTL && time.Since(sp.sent) < req.TTL/4 {
			b.leases[req.Owner] = bound{id: sp.id, sent: sp.sent}
			b.mu.Unlock()
			return sp.id, sp.sent, nil
		}
		stale = append(stale, sp)
	}
	b.mu.Unlock()
	for _, sp := range stale {
		b.revokeLater(sp.id)
	}
	sent := time.Now()
	resp, err := b.cli.Grant(ctx, int64(req.TTL/time.Second))
	if err != nil {
		return 0, time.Time{}, err
	}
	b.mu.Lock()
	b.leases[req.Owner] = bound{id: resp.ID, sent: sent}
	b.mu.Unlock()
	return resp.ID, sent, nil
}

// unbind takes back the lease bound to o, unused: it becomes a spare while
// it is fresh and there is room, or is revoked.
func (b *backend) unbind(o lock.Owner, id clientv3.LeaseID, sent time.Time, ttl time.Duration) {
	b.mu.Lock()
	delete(b.leases, o)
	keep := !b.closed && len(b.spares) < maxSpares && time.Since(sent) < ttl/4
	if keep {
		// Kept in order of sent, so lease takes the freshest from the end.
		i := len(b.spares)
		for i > 0 && b.spares[i-1].sent.After(sent) {
			i--
		}
		b.spares = slices.Insert(b.spares, i, spare{id: id, ttl: ttl, sent: sent})
	}
	b.mu.Unlock()
	if !keep {
		b.revokeLater(id)
	}
}

func (b *backend) revokeLater(id clientv3.LeaseID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.wg.Go(func() { b.revoke(id) })
}

// revoke revokes a lease nobody holds; failure is harmless, the lease
// expires.
func (b *backend) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = b.cli.Revoke(ctx, id)
}

func (b *backend) Close() error {
	if b.w != nil {
		b.w.close()
	}
	b.mu.Lock()
	b.closed = true
	spares := b.spares
	b.spares = nil
	b.mu.Unlock()
	b.wg.Wait()
	for _, sp := range spares {
		b.revoke(sp.id)
	}
	return nil
}
