package redislock

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/lock"
)

var (
	//go:embed holder.lua
	holderLua    string
	holderScript = redis.NewScript(holderLua)
)

var _ lock.HolderReader = (*backend)(nil)

// holderKey is the holder record of the Redis key k: "owner token holder",
// written with the lease and living as long as it, in k's hash slot. The
// lock key itself keeps the owner value alone, as other clients expect.
func holderKey(k, prefix string) string {
	return redisslot.CounterKey(k, ":"+prefix+"haita:holder:"+k)
}

// refreshKeys are the keys the refresh script extends: the lock key and its
// holder record.
func refreshKeys(keys []string) []string { return []string{keys[0], keys[4]} }

// ReadHolder implements lock.HolderReader with one script: the key's owner,
// remaining time and holder record, read atomically. A key taken by a
// client other than haita has no record: its holder is reported with token
// zero and no name.
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	keys := b.keys(key)
	sent := time.Now()
	res, err := holderScript.Run(ctx, b.c, refreshKeys(keys)).Slice()
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("redislock: holder: %w", err)
	}
	if len(res) == 0 {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	info, err := parseHolder(key, res, sent)
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("redislock: holder: %w", err)
	}
	return info, nil
}

// parseHolder turns the holder script's reply {owner, pttl, record} into a
// HolderInfo; it is shared with lock/redlock's reading of one instance.
func parseHolder(key string, res []any, sent time.Time) (lock.HolderInfo, error) {
	if len(res) != 3 {
		return lock.HolderInfo{}, fmt.Errorf("unexpected reply %v", res)
	}
	owner, _ := res[0].(string)
	pttl, _ := res[1].(int64)
	rec, _ := res[2].(string)
	info := lock.HolderInfo{Key: key}
	if pttl >= 0 {
		info.ExpiresAt = sent.Add(time.Duration(pttl) * time.Millisecond)
	}
	parts := strings.SplitN(rec, " ", 3)
	if len(parts) == 3 && parts[0] == owner {
		tok, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			return lock.HolderInfo{}, fmt.Errorf("holder record of %q: token %q: %v", key, parts[1], err)
		}
		info.Token, info.Holder = lock.Token(tok), parts[2]
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
