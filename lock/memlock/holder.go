package memlock

import (
	"context"
	"time"

	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// Holder reads who holds key now; see [lock.Locker.Holder].
func (l *Locker) Holder(ctx context.Context, key string) (lock.HolderInfo, error) {
	l.init()
	if l.err != nil {
		return lock.HolderInfo{}, l.err
	}
	return l.core.Holder(ctx, key)
}

// ReadHolder implements lock.HolderReader from the key's entry. An expired
// lease is reported as no holder, and left for the next acquire to free.
func (b *backend) ReadHolder(_ context.Context, key string) (lock.HolderInfo, error) {
	s := b.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e == nil || !e.held {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	now := time.Now()
	if e.expired(now) {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	return lock.HolderInfo{Key: key, Holder: e.holder, Token: e.token, ExpiresAt: e.expires}, nil
}

// WatchHolder returns an error matching lock.ErrUnsupported: memlock has
// no notification for readers; poll Holder, which costs a map lookup.
func (l *Locker) WatchHolder(ctx context.Context, key string) (lock.Subscription, error) {
	l.init()
	if l.err != nil {
		return nil, l.err
	}
	return l.core.WatchHolder(ctx, key)
}
