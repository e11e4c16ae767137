package etcdlock

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// ReadHolder implements lock.HolderReader: the holder is the first key of
// the key's queue by create revision, which is its fencing token; its value
// is the holder's name. The expiry comes from the etcd lease it is bound
// to, read in a second request (whole seconds, as etcd counts them).
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	resp, err := b.cli.Get(ctx, b.queue(key), clientv3.WithFirstCreate()...)
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("etcdlock: holder: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	kv := resp.Kvs[0]
	info := lock.HolderInfo{Key: key, Holder: string(kv.Value), Token: lock.Token(kv.CreateRevision)}
	if kv.Lease != 0 {
		sent := time.Now()
		ttl, err := b.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return lock.HolderInfo{}, fmt.Errorf("etcdlock: holder: lease: %w", err)
		}
		if ttl.TTL < 0 {
			return lock.HolderInfo{}, lock.ErrNoHolder // expired since the read
		}
		info.ExpiresAt = sent.Add(time.Duration(ttl.TTL) * time.Second)
	}
	return info, nil
}

var _ lock.HolderNotifier = (*backend)(nil)

// SubscribeHolder implements lock.HolderNotifier with a watch on the key's
// queue: every put or delete in it (a new holder or waiter, a release, an
// expiry) wakes the subscriber. The watch is confirmed by etcd before it
// returns.
func (b *backend) SubscribeHolder(ctx context.Context, key string) (lock.Subscription, error) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	wch := b.cli.Watch(clientv3.WithRequireLeader(wctx), b.queue(key), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case resp, ok := <-wch:
		if !ok || resp.Err() != nil || !resp.Created {
			cancel()
			if ok && resp.Err() != nil {
				return nil, fmt.Errorf("etcdlock: watch %q: %w", key, resp.Err())
			}
			return nil, fmt.Errorf("etcdlock: watch %q was not created", key)
		}
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	s := &watchSub{c: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.c)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			select {
			case s.c <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

// watchSub is a Subscription on an etcd watch.
type watchSub struct {
	c      chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (s *watchSub) C() <-chan struct{} { return s.c }

// Close cancels the watch and waits for its goroutine.
func (s *watchSub) Close() {
	s.once.Do(func() {
		s.cancel()
		<-s.done
	})
}
