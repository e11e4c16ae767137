package redislock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
)

// TestGrantBeforeSubscription drives the backend the way two Acquire calls
// of one Locker can interleave: both find no local waiter, so both ask
// Redis and queue there (A before B); the holder's release hands the key to
// A before any subscription exists, so its grant message reaches nobody;
// then B's Wait starts first and leads the local queue. A, queued behind B
// here, must still learn of its grant, from Redis, and not only when the
// poll (a minute) or the lease's TTL (a minute) runs out.
func TestGrantBeforeSubscription(t *testing.T) {
	ctx := t.Context()
	b, le, a, bb := queuedBehindHolder(t, lock.Options{}, time.Minute)
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}

	type result struct {
		g   lock.Grant
		err error
	}
	bDone := make(chan result, 1)
	go func() {
		g, err := b.Wait(ctx, bb)
		bDone <- result{g, err}
	}()
	waitUntil(t, func() bool { return b.Waiting("k") == 1 })

	aDone := make(chan result, 1)
	go func() {
		g, err := b.Wait(ctx, a)
		aDone <- result{g, err}
	}()
	select {
	case r := <-aDone:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if err := b.Release(ctx, lock.Request{Key: "k", Owner: a.Owner, TTL: time.Minute, Token: r.g.Token}); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A, granted the key before it subscribed, did not learn of it")
	}
	r := <-bDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := b.Release(ctx, lock.Request{Key: "k", Owner: bb.Owner, TTL: time.Minute, Token: r.g.Token}); err != nil {
		t.Fatal(err)
	}
}

// TestTurnOfAWaiterNotLeadingHere: Redis queues A before B, both of this
// Locker, but B leads here. The holder's lease expires without a release
// (no grant message): B, asking Redis at the expiry, learns that the key
// is free and A's turn, and pokes A. A must then ask Redis although it
// does not lead here, and not wait until its place in Redis's queue
// expires (a TTL) for B to take the key past it.
func TestTurnOfAWaiterNotLeadingHere(t *testing.T) {
	ctx := t.Context()
	b, _, a, bb := queuedBehindHolder(t, lock.Options{TTL: 300 * time.Millisecond}, time.Second)

	type result struct {
		g   lock.Grant
		err error
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bDone := make(chan result, 1)
	go func() {
		g, err := b.Wait(wctx, bb)
		bDone <- result{g, err}
	}()
	waitUntil(t, func() bool { return b.Waiting("k") == 1 })
	aDone := make(chan result, 1)
	go func() {
		g, err := b.Wait(wctx, a)
		aDone <- result{g, err}
	}()
	select {
	case r := <-aDone:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if err := b.Release(ctx, lock.Request{Key: "k", Owner: a.Owner, TTL: time.Minute, Token: r.g.Token}); err != nil {
			t.Fatal(err)
		}
	case r := <-bDone:
		t.Fatalf("B took the key (%v) past A, first in Redis's queue", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("A, whose turn came by an expiry, did not take the key")
	}
	r := <-bDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := b.Release(ctx, lock.Request{Key: "k", Owner: bb.Owner, TTL: time.Minute, Token: r.g.Token}); err != nil {
		t.Fatal(err)
	}
}

// queuedBehindHolder starts a server on which a Locker with opts holds
// "k" (its lease is returned), and a backend polling every poll whose two
// waiting requests a and b, in that order, asked Redis and queued there
// without waiting yet: the state two Acquire calls of one Locker reach
// when both find no local waiter.
func queuedBehindHolder(t *testing.T, opts lock.Options, poll time.Duration) (b *backend, le *lock.Lease, a, bb lock.Request) {
	t.Helper()
	s := testserver.Redis(t, testserver.RedisOptions{})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	ctx := t.Context()
	holder, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Close() })
	if le, err = holder.Acquire(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	b = &backend{c: c, poll: poll, hub: newHub(c, linger)}
	b.q = lock.NewWaitQueue(b.releaseOrphan)
	t.Cleanup(func() { _ = b.Close() })
	req := func() lock.Request {
		return lock.Request{Key: "k", Owner: lock.NewOwner(), TTL: time.Minute, Wait: true}
	}
	a, bb = req(), req()
	for _, r := range []lock.Request{a, bb} {
		if _, err := b.Try(ctx, r); !errors.Is(err, lock.ErrNotAcquired) {
			t.Fatalf("Try = %v, want held", err)
		}
	}
	return b, le, a, bb
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}
