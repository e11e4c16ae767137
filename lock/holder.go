package lock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// HolderInfo is what the engine knows about the current holder of a key, as
// read by [Locker.Holder].
type HolderInfo struct {
	// Key is the lock key.
	Key string
	// Holder is the holder's Options.Holder; empty when it set none.
	Holder string
	// Token is the holder's fencing token; zero on backends without
	// fencing.
	Token Token
	// ExpiresAt is when the holder's lease expires on the engine unless
	// refreshed, as seen by this client (the engine's remaining time added
	// to this client's clock when the answer arrived); zero when the lease
	// has no TTL or the backend cannot tell.
	ExpiresAt time.Time
}

// ErrNoHolder is returned by [Locker.Holder] when nobody holds the key.
var ErrNoHolder = errors.New("lock: key has no holder")

// HolderReader is implemented by backends that can read a key's current
// holder; every backend of haita does. [Locker.Holder] calls it after
// validating the key. It is optional so that a Backend written for an
// older contract still builds; Locker.Holder then returns
// [ErrUnsupported].
//
// The rules a backend must follow:
//   - ReadHolder must not change the key or its holder, its waiters, or the
//     fencing counter; it takes no place in a queue.
//   - It returns an error matching ErrNoHolder when the key is free
//     (never held, released, or expired on the engine), and otherwise the
//     holder's Token as handed out with its Grant, so that a caller can
//     tell a new holder from an old one by the token alone.
//   - Holder is the Request.Holder of the grant, where the engine stores
//     it (all backends of haita do).
//   - Between a grant being decided by the engine and the grant reaching
//     its caller, ReadHolder may already report the new holder; it never
//     reports a holder whose token is smaller than one it reported before
//     for the same key, on a backend with fencing, for one reader.
//   - Any other error means the engine did not answer.
type HolderReader interface {
	ReadHolder(ctx context.Context, key string) (HolderInfo, error)
}

// ErrUnsupported is returned by [Locker.Holder] when the backend cannot
// read a key's holder.
var ErrUnsupported = errors.New("lock: not supported by the backend")

// Holder reads who holds key now, without taking a place in line. It
// returns an error matching [ErrNoHolder] when the key is free, one
// matching [ErrInvalidKey] for an invalid key, [ErrClosed] after Close,
// and [ErrUnsupported] when the backend cannot read holders.
func (l *locker) Holder(ctx context.Context, key string) (HolderInfo, error) {
	if err := ValidateKey(key); err != nil {
		return HolderInfo{}, err
	}
	if l.ctx.Err() != nil {
		return HolderInfo{}, ErrClosed
	}
	r, ok := l.b.(HolderReader)
	if !ok {
		return HolderInfo{}, fmt.Errorf("lock: holder of %q on %s: %w", key, l.caps.Name, ErrUnsupported)
	}
	info, err := r.ReadHolder(ctx, key)
	switch {
	case err == nil:
		info.Key = key
		return info, nil
	case errors.Is(err, ErrNoHolder):
		return HolderInfo{}, fmt.Errorf("lock: holder of %q: %w", key, ErrNoHolder)
	case ctx.Err() != nil:
		return HolderInfo{}, fmt.Errorf("lock: holder of %q: %w", key, ctx.Err())
	}
	return HolderInfo{}, fmt.Errorf("lock: holder of %q: %w", key, err)
}

// HolderNotifier is implemented by backends that can tell a reader that a
// key's holder may have changed (released, expired or taken by another).
// SubscribeHolder must be in effect when it returns, like
// [Notifier.Subscribe]; it takes no place in line and must not change how
// the key is granted or whom a release wakes. (A Notifier's subscription
// is a waiter's: it may take part in the backend's queue and handoff, so
// it does not serve readers.)
type HolderNotifier interface {
	SubscribeHolder(ctx context.Context, key string) (Subscription, error)
}

// WatchHolder returns a subscription whose channel receives a value when
// key's holder may have changed, by the engine's notification, where the
// backend implements [HolderNotifier]: etcd reports every change; Redis
// and PostgreSQL report releases that free the key, so a reader finds the
// next holder by reading again shortly after. Read the holder with Holder
// after each value. It returns an error matching [ErrUnsupported] when the
// backend has no such notification: poll Holder instead. The caller must
// Close the subscription.
func (l *locker) WatchHolder(ctx context.Context, key string) (Subscription, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if l.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if b, ok := l.b.(HolderNotifier); ok {
		return b.SubscribeHolder(ctx, key)
	}
	return nil, fmt.Errorf("lock: watch holder of %q on %s: %w", key, l.caps.Name, ErrUnsupported)
}
