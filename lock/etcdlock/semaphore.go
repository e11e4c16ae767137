package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
)

// NewSemaphore returns a [lock.Semaphore] with limit permits per key on
// etcd; see [New] for the client, the TTL and the prefix option.
//
// A key's permits are keys under prefix + "sem\x00" + key + "\x00": a meta
// key holding the limit, one holder key and one waiter key per request,
// each bound to the request's etcd lease, so a dead client's permit and
// place in the queue go away with its lease. Waiters are ordered by the
// create revision of their keys (FIFO); only the first may take permits, so
// a waiting writer holds back readers that come after it. A grant is a
// transaction that succeeds only if the meta key has not changed since the
// grant's read — every grant rewrites it — so two grants never both count
// on the same free permit. The token is the grant's revision. Waiters watch
// the key's prefix. It returns an error matching [lock.ErrInvalidOptions]
// as [New] does, or for a bad limit.
func NewSemaphore(cli Client, opts lock.Options, limit int, options ...Option) (*lock.Semaphore, error) {
	b, err := newSemBackend(cli, opts, options)
	if err != nil {
		return nil, err
	}
	return lock.NewSemaphore(b, opts, limit)
}

// NewRWLocker returns a [lock.RWLocker] on etcd, on the same keys as
// [NewSemaphore]: a writer takes every permit of its key.
func NewRWLocker(cli Client, opts lock.Options, options ...Option) (*lock.RWLocker, error) {
	b, err := newSemBackend(cli, opts, options)
	if err != nil {
		return nil, err
	}
	return lock.NewRWLocker(b, opts)
}

func newSemBackend(cli Client, opts lock.Options, options []Option) (*semBackend, error) {
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
	if cfg.prefix == "" {
		cfg.prefix = DefaultPrefix
	}
	return &semBackend{cli: cli, prefix: cfg.prefix, leases: make(map[lock.Owner]clientv3.LeaseID), waiting: make(map[lock.Owner]bool)}, nil
}

// semBackend implements lock.Backend and lock.Notifier for semaphores and
// reader-writer locks.
type semBackend struct {
	cli    Client
	prefix string
	wg     sync.WaitGroup // keep-alive and watch goroutines

	mu      sync.Mutex
	leases  map[lock.Owner]clientv3.LeaseID // of requests that hold or wait
	waiting map[lock.Owner]bool
}

var (
	_ lock.Backend  = (*semBackend)(nil)
	_ lock.Notifier = (*semBackend)(nil)
)

func (b *semBackend) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "etcd", TTL: true, Fencing: true, FIFO: true, LossDetection: true,
		FailoverSafe: true, CrossProcess: true, Notify: true, Semaphore: true, RWLock: true}
}

func (b *semBackend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *semBackend) Close() error {
	b.wg.Wait()
	return nil
}

func (b *semBackend) dir(key string) string  { return b.prefix + "sem\x00" + key + "\x00" }
func (b *semBackend) meta(key string) string { return b.dir(key) + "m" }
func (b *semBackend) held(req lock.Request) string {
	return b.dir(req.Key) + "h/" + req.Owner.String()
}
func (b *semBackend) queued(req lock.Request) string {
	return b.dir(req.Key) + "q/" + req.Owner.String()
}

// lease returns req's etcd lease, granting one on first use.
func (b *semBackend) lease(ctx context.Context, req lock.Request) (clientv3.LeaseID, error) {
	b.mu.Lock()
	id, ok := b.leases[req.Owner]
	b.mu.Unlock()
	if ok {
		return id, nil
	}
	g, err := b.cli.Grant(ctx, int64(req.TTL/time.Second))
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.leases[req.Owner] = g.ID
	b.mu.Unlock()
	return g.ID, nil
}

// dropLease forgets and revokes req's lease.
func (b *semBackend) dropLease(req lock.Request) {
	b.mu.Lock()
	id, ok := b.leases[req.Owner]
	delete(b.leases, req.Owner)
	b.mu.Unlock()
	if ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = b.cli.Revoke(ctx, id)
	}
}

// view is a key's state at one revision.
type view struct {
	rev      int64
	meta     *mvccpb.KeyValue
	used     int64
	holders  int
	queue    []*mvccpb.KeyValue // by create revision
	inQueue  bool
	limit    int
	hasLimit bool
}

func (b *semBackend) read(ctx context.Context, req lock.Request) (view, error) {
	var v view
	resp, err := b.cli.Get(ctx, b.dir(req.Key), clientv3.WithPrefix())
	if err != nil {
		return v, err
	}
	v.rev = resp.Header.Revision
	hp, qp, me := b.dir(req.Key)+"h/", b.dir(req.Key)+"q/", b.queued(req)
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		switch {
		case k == b.meta(req.Key):
			v.meta = kv
			v.limit, _ = strconv.Atoi(string(kv.Value))
			v.hasLimit = true
		case strings.HasPrefix(k, hp):
			w, _ := strconv.ParseInt(string(kv.Value), 10, 64)
			v.used += w
			v.holders++
		case strings.HasPrefix(k, qp):
			v.queue = append(v.queue, kv)
			v.inQueue = v.inQueue || k == me
		}
	}
	slices.SortFunc(v.queue, func(a, c *mvccpb.KeyValue) int { return int(a.CreateRevision - c.CreateRevision) })
	return v, nil
}

// checkLimit returns a LimitError when the key is in use with another limit.
func (v view) checkLimit(req lock.Request) error {
	busy := v.holders > 0 || len(v.queue) > 1 || len(v.queue) == 1 && !v.inQueue
	if busy && v.hasLimit && v.limit != req.Share.Limit {
		return &lock.LimitError{Key: req.Key, Have: v.limit, Want: req.Share.Limit}
	}
	return nil
}

func (b *semBackend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	waiting := b.waiting[req.Owner]
	b.mu.Unlock()
	for range 8 {
		v, err := b.read(ctx, req)
		if err != nil {
			return lock.Grant{}, err
		}
		if err := v.checkLimit(req); err != nil {
			return lock.Grant{}, err
		}
		if waiting && !v.inQueue {
			// Its place expired (or was never taken): queue again.
			if err := b.enqueue(ctx, req); err != nil {
				return lock.Grant{}, err
			}
			continue
		}
		turn := len(v.queue) == 0 || string(v.queue[0].Key) == b.queued(req)
		if !turn || v.used+int64(req.Share.Weight) > int64(req.Share.Limit) {
			if !waiting {
				b.dropLease(req)
			}
			return lock.Grant{}, &lock.HeldError{Key: req.Key}
		}
		id, err := b.lease(ctx, req)
		if err != nil {
			return lock.Grant{}, err
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(b.meta(req.Key)), "=", 0)
		if v.meta != nil {
			cmp = clientv3.Compare(clientv3.ModRevision(b.meta(req.Key)), "=", v.meta.ModRevision)
		}
		resp, err := b.cli.Txn(ctx).If(cmp).Then(
			clientv3.OpPut(b.meta(req.Key), strconv.Itoa(req.Share.Limit)),
			clientv3.OpPut(b.held(req), strconv.Itoa(req.Share.Weight), clientv3.WithLease(id)),
			clientv3.OpDelete(b.queued(req)),
		).Commit()
		if err != nil {
			return lock.Grant{}, err
		}
		if resp.Succeeded {
			return lock.Grant{Token: lock.Token(resp.Header.Revision)}, nil
		}
	}
	if !waiting {
		b.dropLease(req)
	}
	return lock.Grant{}, &lock.HeldError{Key: req.Key} // contended: try again on the next wake-up
}

// enqueue puts req's waiter key, bound to its lease, unless it exists.
func (b *semBackend) enqueue(ctx context.Context, req lock.Request) error {
	id, err := b.lease(ctx, req)
	if err != nil {
		return err
	}
	_, err = b.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(b.queued(req)), "=", 0)).
		Then(clientv3.OpPut(b.queued(req), strconv.Itoa(req.Share.Weight), clientv3.WithLease(id))).Commit()
	return err
}

func (b *semBackend) Refresh(ctx context.Context, req lock.Request) error {
	b.mu.Lock()
	id, ok := b.leases[req.Owner]
	b.mu.Unlock()
	if !ok {
		return lock.ErrNotHeld
	}
	if _, err := b.cli.KeepAliveOnce(ctx, id); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("etcdlock: refresh %q: %w", req.Key, lock.ErrNotHeld)
		}
		return err
	}
	resp, err := b.cli.Get(ctx, b.held(req), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count == 0 {
		return fmt.Errorf("etcdlock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

func (b *semBackend) Release(ctx context.Context, req lock.Request) error {
	resp, err := b.cli.Delete(ctx, b.held(req))
	if err != nil {
		return err
	}
	b.dropLease(req)
	if resp.Deleted == 0 {
		return fmt.Errorf("etcdlock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

// Subscribe implements lock.Notifier: the waiter's key joins the queue,
// its lease is kept alive while it waits, and any change under the key's
// prefix wakes it.
func (b *semBackend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	v, err := b.read(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := v.checkLimit(req); err != nil {
		return nil, err
	}
	if err := b.enqueue(ctx, req); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.waiting[req.Owner] = true
	id := b.leases[req.Owner]
	b.mu.Unlock()
	wctx, cancel := context.WithCancel(context.Background())
	s := &semSub{b: b, req: req, c: make(chan struct{}, 1), cancel: cancel}
	wch := b.cli.Watch(clientv3.WithRequireLeader(wctx), b.dir(req.Key), clientv3.WithPrefix(), clientv3.WithRev(v.rev+1))
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		for range wch {
			s.wake()
		}
	}()
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(max(req.TTL/3, time.Second/3))
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				_, _ = b.cli.KeepAliveOnce(wctx, id)
			}
		}
	}()
	return s, nil
}

// semSub is one waiter's watch and keep-alive.
type semSub struct {
	b      *semBackend
	req    lock.Request
	c      chan struct{}
	cancel context.CancelFunc
	once   sync.Once
}

func (s *semSub) wake() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

func (s *semSub) C() <-chan struct{} { return s.c }

// Close leaves the queue; the lease goes too unless the waiter now holds a
// permit under it.
func (s *semSub) Close() {
	s.once.Do(func() {
		s.cancel()
		b := s.b
		b.mu.Lock()
		delete(b.waiting, s.req.Owner)
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = b.cli.Delete(ctx, b.queued(s.req))
		resp, err := b.cli.Get(ctx, b.held(s.req), clientv3.WithCountOnly())
		if err == nil && resp.Count == 0 {
			b.dropLease(s.req)
		}
	})
}
