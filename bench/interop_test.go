package bench

import (
	"context"
	"errors"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	rsredis "github.com/go-redsync/redsync/v4/redis"
	rsgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/lock/redlock"
)

// TestInteropRedsync: a key locked by redsync excludes haita and the other
// way round, on one instance (lock/redislock) and on three (lock/redlock).
func TestInteropRedsync(t *testing.T) {
	c := needRedis(t, 2)
	l, err := redislock.New(c, lock.Options{PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rs := redsync.New(rsgoredis.NewPool(c))
	checkExclusion(t, l, func(key string) (bool, func()) {
		m := rs.NewMutex(key, redsync.WithExpiry(10*time.Second))
		if err := m.TryLockContext(t.Context()); err != nil {
			return false, nil
		}
		return true, func() { _, _ = m.UnlockContext(context.Background()) }
	})

	t.Run("redlock", func(t *testing.T) {
		scripters := make([]redis.Scripter, 3)
		pools := make([]rsredis.Pool, 3)
		for i := range 3 {
			ci := needRedis(t, i+2)
			scripters[i], pools[i] = ci, rsgoredis.NewPool(ci)
		}
		rl, err := redlock.New(scripters, lock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer rl.Close()
		rs := redsync.New(pools...)
		checkExclusion(t, rl, func(key string) (bool, func()) {
			m := rs.NewMutex(key, redsync.WithExpiry(10*time.Second))
			if err := m.TryLockContext(t.Context()); err != nil {
				return false, nil
			}
			return true, func() { _, _ = m.UnlockContext(context.Background()) }
		})
	})
}

// TestInteropBsm: the same with bsm/redislock.
func TestInteropBsm(t *testing.T) {
	c := needRedis(t, 0)
	l, err := redislock.New(c, lock.Options{PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bl := bsm.New(c)
	checkExclusion(t, l, func(key string) (bool, func()) {
		lk, err := bl.Obtain(t.Context(), key, 10*time.Second, nil)
		if err != nil {
			return false, nil
		}
		return true, func() { _ = lk.Release(context.Background()) }
	})
}

// checkExclusion: the peer holds the key, haita cannot take it and waits
// until the peer lets go; then haita holds it and the peer cannot take it.
func checkExclusion(t *testing.T, l lock.Locker, peerTry func(key string) (bool, func())) {
	t.Helper()
	ctx := t.Context()
	key := uniqueKey("interop:")
	ok, unlock := peerTry(key)
	if !ok {
		t.Fatal("peer could not take a free key")
	}
	if _, err := l.TryAcquire(ctx, key); !errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("haita TryAcquire on a key the peer holds: %v, want ErrNotAcquired", err)
	}
	go func() { time.Sleep(100 * time.Millisecond); unlock() }()
	start := time.Now()
	le, err := l.Acquire(ctx, key)
	if err != nil {
		t.Fatalf("haita Acquire after the peer's unlock: %v", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Fatalf("haita got the key after %v, while the peer held it", d)
	}
	if ok, unlock := peerTry(key); ok {
		unlock()
		t.Fatal("peer took a key haita holds")
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	ok, unlock = peerTry(key)
	if !ok {
		t.Fatal("peer could not take the key after haita released it")
	}
	unlock()
}
