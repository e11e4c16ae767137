package faults

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// ttlRigs runs fn on every backend with a TTL, each in a subtest (these
// tests use no worker processes).
func ttlRigs(t *testing.T, fn func(t *testing.T, r *rig)) {
	t.Run("redis", func(t *testing.T) {
		r, _ := redisRig(t, redisNoPersistence)
		fn(t, r)
	})
	t.Run("redlock", func(t *testing.T) { fn(t, redlockRig(t, 3)) })
	t.Run("postgres", func(t *testing.T) { fn(t, pgRig(t)) })
	t.Run("mysql", func(t *testing.T) { fn(t, myRig(t)) })
	t.Run("etcd", func(t *testing.T) {
		r, _, _ := etcdRig(t, 1)
		fn(t, r)
	})
	t.Run("memlock", func(t *testing.T) {
		r := &rig{name: "memlock", ttl: 300 * time.Millisecond}
		var shared memlock.Locker
		r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
			return closeWith(t)(shared.With(opts))
		}
		fn(t, r)
	})
}

// TestDoneBeforeServerExpiry: a lease that is not refreshed closes Done
// while the engine still holds it — the loss is reported before anyone
// else can take the key.
func TestDoneBeforeServerExpiry(t *testing.T) {
	ttlRigs(t, func(t *testing.T, r *rig) {
		if r.probe == nil {
			t.Skip("no engine to ask: in-process")
		}
		key := uniqueKey(t, "done")
		le, err := r.locker(t, r.ttlOpts()).Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		<-le.Done()
		closed := time.Now()
		_, held, err := r.probe(t.Context(), key, le.Owner())
		if err != nil || !held {
			t.Fatalf("engine had expired the lease when Done closed (held %v, %v)", held, err)
		}
		for held && err == nil {
			time.Sleep(2 * time.Millisecond)
			_, held, err = r.probe(t.Context(), key, le.Owner())
		}
		t.Logf("Done closed %v before the engine let the key go", time.Since(closed).Round(time.Millisecond))
	})
}

// TestRefreshRacesRelease runs Refresh and Release of one lease at the same
// time, many times: whenever Release reports success the key is free
// afterwards — a refresh that lost the race never brings the key back.
func TestRefreshRacesRelease(t *testing.T) {
	ttlRigs(t, func(t *testing.T, r *rig) {
		l := r.locker(t, r.ttlOpts())
		other := r.locker(t, r.ttlOpts())
		ctx := t.Context()
		for i := range pick(30, 200) {
			key := uniqueKey(t, "race")
			le, err := l.Acquire(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var refErr, relErr error
			wg.Go(func() { refErr = le.Refresh(ctx) })
			wg.Go(func() { relErr = le.Release(ctx) })
			wg.Wait()
			if relErr != nil {
				t.Fatalf("round %d: release: %v (refresh: %v)", i, relErr, refErr)
			}
			if refErr != nil && !errors.Is(refErr, lock.ErrNotHeld) {
				t.Fatalf("round %d: refresh: %v", i, refErr)
			}
			// Held is the failure; an unknown outcome (Redlock instances
			// slower than its instance timeout on a loaded host) says
			// nothing either way, and was given back: ask again.
			le2, err := other.TryAcquire(ctx, key)
			for errors.Is(err, lock.ErrIndeterminate) && ctx.Err() == nil {
				le2, err = other.TryAcquire(ctx, key)
			}
			if err != nil {
				t.Fatalf("round %d: key held after a successful Release raced with Refresh (refresh: %v): %v", i, refErr, err)
			}
			le2.Release(ctx)
		}
	})
}

// TestAfterExpiry: once a lease expired and another holder took the key,
// the old lease's Refresh and Release are ErrNotHeld and change nothing.
func TestAfterExpiry(t *testing.T) {
	ttlRigs(t, func(t *testing.T, r *rig) {
		ctx := t.Context()
		key := uniqueKey(t, "expired")
		old, err := r.locker(t, r.ttlOpts()).Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		l2 := r.locker(t, lock.Options{TTL: 30 * time.Second, WaitLimit: r.ttl + 20*time.Second})
		next, err := l2.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer next.Release(context.Background())
		if err := old.Refresh(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Errorf("old lease's Refresh: %v, want ErrNotHeld", err)
		}
		if err := old.Release(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Errorf("old lease's Release: %v, want ErrNotHeld", err)
		}
		if r.probe != nil {
			if _, held, err := r.probe(ctx, key, next.Owner()); err != nil || !held {
				t.Errorf("new holder lost the key to the old lease's calls (held %v, %v)", held, err)
			}
		}
		if _, err := r.locker(t, r.ttlOpts()).TryAcquire(ctx, key); !errors.Is(err, lock.ErrNotAcquired) {
			t.Errorf("a third client: %v, want ErrNotAcquired", err)
		}
		if err := next.Refresh(ctx); err != nil {
			t.Errorf("new holder's Refresh: %v", err)
		}
	})
}

// Fault 8: client clock jumps. lock.Options has no clock to inject, and
// changing the system's wall clock needs privileges and disturbs every
// other test on the machine. What can be shown: a lease's deadline is a
// time.Time that carries a monotonic reading, so time.Until and the
// lease's timer measure it on the monotonic clock, which wall-clock jumps
// (NTP steps, settimeofday) do not move. The server-side expiry is judged
// by the engine's own clock (Redis PX, PostgreSQL now(), etcd's lessor), so
// a client's skew cannot extend it either.
func TestDeadlineOnMonotonicClock(t *testing.T) {
	ttlRigs(t, func(t *testing.T, r *rig) {
		le, err := r.locker(t, r.ttlOpts()).Acquire(t.Context(), uniqueKey(t, "clock"))
		if err != nil {
			t.Fatal(err)
		}
		defer le.Release(context.Background())
		exp := le.Expiry()
		if !strings.Contains(exp.String(), " m=") {
			t.Fatalf("Expiry %v carries no monotonic reading: a wall-clock jump would move the deadline", exp)
		}
		if left := time.Until(exp); left > r.ttl {
			t.Errorf("deadline %v away, beyond the TTL %v", left, r.ttl)
		}
	})
}
