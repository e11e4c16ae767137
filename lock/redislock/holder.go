package redislock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisholder"
	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// refreshKeys are the keys the refresh script extends: the lock key and its
// holder record.
func refreshKeys(keys []string) []string { return []string{keys[0], keys[4]} }

// ReadHolder implements lock.HolderReader with one script: the key's owner,
// remaining time and holder record, read atomically. A key taken by a
// client other than haita has no record: its holder is reported with token
// zero and no name.
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	keys := refreshKeys(b.keys(key))
	sent := time.Now()
	r, err := redisholder.Read(ctx, b.c, keys[0], keys[1])
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("redislock: holder of %q: %w", key, err)
	}
	if r == (redisholder.Record{}) {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	info := lock.HolderInfo{Key: key, Token: r.Token, Holder: r.Holder}
	if r.TTL != redisholder.NoExpiry {
		info.ExpiresAt = sent.Add(r.TTL)
	}
	return info, nil
}

var _ lock.HolderNotifier = (*backend)(nil)

// SubscribeHolder implements lock.HolderNotifier on a pub/sub connection
// of its own, subscribed to the channel a release publishes on (the
// Locker's shared connection serves waiters, and a reader must not take a
// waiter's place). A release by haita, and only that, wakes the reader: a
// new holder, a handoff within one Locker and an expiry publish nothing.
// The subscription is confirmed by Redis before it returns.
func (b *backend) SubscribeHolder(ctx context.Context, key string) (lock.Subscription, error) {
	ps := b.c.Subscribe(ctx, grantChannel(b.prefix+key))
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("redislock: subscribe %q: %w", key, err)
	}
	s := &psSub{c: make(chan struct{}, 1), ps: ps, done: make(chan struct{})}
	msgs := ps.Channel()
	go func() {
		defer close(s.done)
		defer close(s.c)
		for range msgs {
			select {
			case s.c <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

// psSub is a Subscription on a pub/sub connection of its own.
type psSub struct {
	c    chan struct{}
	ps   *redis.PubSub
	done chan struct{}
	once sync.Once
}

func (s *psSub) C() <-chan struct{} { return s.c }

// Close closes the connection and waits for the forwarding goroutine.
func (s *psSub) Close() {
	s.once.Do(func() {
		_ = s.ps.Close()
		<-s.done
	})
}
