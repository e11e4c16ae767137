package faults

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redlock"
)

// Fault 5: Redlock over five instances, each behind a proxy that takes it
// down (every connection is reset as soon as the client sends) or slows it.

type redlockNet struct {
	proxies []*toxiproxy.Proxy
	direct  []*redis.Client // bypass the proxies
	l       lock.Locker
}

func newRedlockNet(t *testing.T, n int, opts lock.Options, options ...redlock.Option) *redlockNet {
	rn := &redlockNet{}
	var scripters []redis.Scripter
	for range n {
		srv := testserver.Redis(t, redisNoPersistence)
		p := proxy(t, srv.Addr())
		rn.proxies = append(rn.proxies, p)
		rn.direct = append(rn.direct, redisClient(t, srv.Addr()))
		scripters = append(scripters, redisClient(t, p.Listen))
	}
	rn.l = closeWith(t)(redlock.New(scripters, opts, options...))
	return rn
}

// down takes the instances in mask down and returns a function that brings
// them back.
func (rn *redlockNet) down(t *testing.T, mask int) func() {
	var removes []func()
	for i, p := range rn.proxies {
		if mask&(1<<i) != 0 {
			removes = append(removes, toxic(t, p, "reset_peer", "upstream", `"timeout":0`))
		}
	}
	return func() {
		for _, r := range removes {
			r()
		}
	}
}

// holders returns, per instance, the value stored under key ("" when none).
func (rn *redlockNet) holders(t *testing.T, key string) []string {
	out := make([]string, len(rn.direct))
	for i, c := range rn.direct {
		v, err := c.Get(context.Background(), key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		out[i] = v
	}
	return out
}

// TestRedlockMasks takes every subset of five instances down (all 32
// masks), one acquire each: with at most two down the lease is granted with
// a greater token, and releasing leaves nothing on any instance; with three
// or more down nothing is granted and the instances that were up keep no
// partial grant.
func TestRedlockMasks(t *testing.T) {
	rn := newRedlockNet(t, 5, lock.Options{TTL: 5 * time.Second})
	key := uniqueKey(t, "masks")
	var last lock.Token
	for mask := range 32 {
		downN := bits.OnesCount(uint(mask))
		t.Run(fmt.Sprintf("down=%05b", mask), func(t *testing.T) {
			up := rn.down(t, mask)
			defer up()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			le, err := rn.l.TryAcquire(ctx, key)
			if downN >= 3 {
				if err == nil {
					le.Release(ctx)
					t.Fatalf("granted with %d of 5 instances down", downN)
				}
				if !errors.Is(err, lock.ErrIndeterminate) {
					t.Errorf("majority down: %v, want ErrIndeterminate (a *redlock.QuorumError)", err)
				}
				var qe *redlock.QuorumError
				if !errors.As(err, &qe) {
					t.Errorf("majority down: %v is no *redlock.QuorumError", err)
				}
				for i, v := range rn.holders(t, key) {
					if v != "" {
						t.Errorf("instance %d (up: %v) still holds %q after the refused acquire", i, mask&(1<<i) == 0, v)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("%d down: %v", downN, err)
			}
			if le.Token() <= last {
				t.Errorf("token %d not greater than %d", le.Token(), last)
			}
			last = le.Token()
			if err := le.Release(ctx); err != nil {
				t.Fatalf("release with %d down: %v", downN, err)
			}
			for i, v := range rn.holders(t, key) {
				if v != "" {
					t.Errorf("instance %d still holds the key after release", i)
				}
			}
		})
	}
}

// TestRedlockPartialCleanedUp has a foreign owner hold the key on three
// instances: the acquire is refused as held, and the two grants it got are
// taken back.
func TestRedlockPartialCleanedUp(t *testing.T) {
	rn := newRedlockNet(t, 5, lock.Options{TTL: 5 * time.Second})
	ctx := t.Context()
	for _, foreign := range []int{1, 2, 3, 4} {
		key := uniqueKey(t, "partial")
		for i := range foreign {
			if err := rn.direct[i].Set(ctx, key, "foreign", 10*time.Second).Err(); err != nil {
				t.Fatal(err)
			}
		}
		le, err := rn.l.TryAcquire(ctx, key)
		switch {
		case foreign <= 2 && err != nil:
			t.Errorf("foreign holder on %d instances: %v", foreign, err)
		case foreign <= 2:
			le.Release(ctx)
		case err == nil:
			t.Errorf("granted with a foreign holder on %d of 5", foreign)
		case !errors.Is(err, lock.ErrNotAcquired):
			t.Errorf("foreign holder on %d: %v, want ErrNotAcquired", foreign, err)
		}
		for i, v := range rn.holders(t, key) {
			if want := map[bool]string{true: "foreign", false: ""}[i < foreign]; v != want {
				t.Errorf("foreign on %d: instance %d holds %q, want %q", foreign, i, v, want)
			}
		}
	}
}

// TestRedlockSlowInstances delays the replies of some instances: a lease
// granted by a slow quorum is valid for the TTL minus the time the quorum
// took; a majority slower than the per-instance timeout grants nothing.
func TestRedlockSlowInstances(t *testing.T) {
	const ttl = time.Second
	rn := newRedlockNet(t, 5, lock.Options{TTL: ttl})
	cases := []struct {
		slow    int
		latency time.Duration
		granted bool
	}{
		{slow: 2, latency: 150 * time.Millisecond, granted: true},  // the fast majority decides
		{slow: 3, latency: 50 * time.Millisecond, granted: true},   // a slow majority within the instance timeout (TTL/10)
		{slow: 3, latency: 150 * time.Millisecond, granted: false}, // a majority slower than the instance timeout
		{slow: 3, latency: 1200 * time.Millisecond, granted: false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("slow=%d/latency=%v", c.slow, c.latency), func(t *testing.T) {
			key := uniqueKey(t, "slow")
			var removes []func()
			for i := range c.slow {
				removes = append(removes, toxic(t, rn.proxies[i], "latency", "downstream", fmt.Sprintf(`"latency":%d`, c.latency.Milliseconds())))
			}
			start := time.Now()
			le, err := rn.l.TryAcquire(t.Context(), key)
			took := time.Since(start)
			for _, r := range removes {
				r()
			}
			if !c.granted {
				if err == nil {
					le.Release(t.Context())
					t.Fatalf("granted by a quorum slower than the TTL (took %v)", took)
				}
				t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
				return
			}
			if err != nil {
				t.Fatalf("after %v: %v", took, err)
			}
			defer le.Release(context.Background())
			validity := le.Expiry().Sub(start)
			t.Logf("granted after %v, local deadline %v after the send", took.Round(time.Millisecond), validity.Round(time.Millisecond))
			if validity > ttl-c.latency && c.slow >= 3 {
				t.Errorf("validity %v not shortened by the slow quorum's %v", validity, c.latency)
			}
		})
	}
}

// TestRedlockSlowMinority: two instances slower than the TTL, three fast.
// Each instance's answer is bounded by a per-instance timeout small
// against the TTL (as the Redlock description asks), so the fast majority
// decides and the slow minority cannot refuse every acquire.
func TestRedlockSlowMinority(t *testing.T) {
	const ttl = time.Second
	rn := newRedlockNet(t, 5, lock.Options{TTL: ttl})
	key := uniqueKey(t, "slowminority")
	for i := range 2 {
		toxic(t, rn.proxies[i], "latency", "downstream", `"latency":1500`)
	}
	start := time.Now()
	le, err := rn.l.TryAcquire(t.Context(), key)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("refused with only 2 of 5 instances slow, after %v: %v", took.Round(time.Millisecond), err)
	}
	defer le.Release(context.WithoutCancel(t.Context()))
	if left := time.Until(le.Expiry()); left < ttl/2 {
		t.Errorf("granted after %v with only %v of the %v TTL left", took.Round(time.Millisecond), left.Round(time.Millisecond), ttl)
	}
	t.Logf("granted with a slow minority after %v", took.Round(time.Millisecond))
}

// TestRedlockLateGrantIsLost delays every instance's reply past the
// lease's validity time, with an instance timeout that lets them run that
// long: every instance granted the key, but too late. That is a lost grant
// (lock.ErrLost), given back everywhere, not an unknown outcome.
func TestRedlockLateGrantIsLost(t *testing.T) {
	const ttl = time.Second
	rn := newRedlockNet(t, 3, lock.Options{TTL: ttl}, redlock.WithInstanceTimeout(ttl-5*time.Millisecond))
	key := uniqueKey(t, "late")
	_, _ = rn.l.TryAcquire(t.Context(), "warm-up/"+key)
	var removes []func()
	for _, p := range rn.proxies {
		removes = append(removes, toxic(t, p, "latency", "downstream", `"latency":1200`))
	}
	le, err := rn.l.TryAcquire(t.Context(), key)
	for _, r := range removes {
		r()
	}
	if err == nil {
		le.Release(context.Background())
		t.Fatal("a grant slower than its TTL was handed out")
	}
	if !errors.Is(err, lock.ErrLost) || errors.Is(err, lock.ErrIndeterminate) {
		t.Fatalf("late grant: %v, want ErrLost and not ErrIndeterminate", err)
	}
	var qe *redlock.QuorumError
	if errors.As(err, &qe) {
		t.Errorf("late grant reported as %v", qe)
	}
	t.Logf("late grant: %v", err)
	for i, v := range rn.holders(t, key) {
		if v != "" {
			t.Errorf("instance %d still holds the late grant", i)
		}
	}
}
