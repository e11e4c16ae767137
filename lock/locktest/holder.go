package locktest

import (
	"errors"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// testHolder checks Locker.Holder: no holder for a free key; the holder's
// name, token and expiry while held, read by its own Locker and another;
// the next holder's greater token, also after a handoff inside one Locker;
// no holder after release and, for TTL backends, after the engine expired
// the lease; a WatchHolder subscription woken by the release, where the
// backend has one; clear errors for bad keys and after Close.
func (s *suite) testHolder(t *testing.T) {
	opts := s.ttlOpts()
	opts.Holder = "alpha"
	a := s.locker(t, opts)
	opts.Holder = "beta"
	b := s.locker(t, opts)
	key := s.key(t, "k")
	if _, err := b.Holder(t.Context(), key); errors.Is(err, lock.ErrUnsupported) {
		t.Skipf("backend %s cannot read holders: %v", s.caps.Name, err)
	} else if !errors.Is(err, lock.ErrNoHolder) {
		t.Fatalf("Holder of a free key = %v, want ErrNoHolder", err)
	}

	sub, err := b.WatchHolder(t.Context(), key)
	switch {
	case errors.Is(err, lock.ErrUnsupported):
		sub = nil // polling only
	case err != nil:
		t.Fatalf("WatchHolder: %v", err)
	default:
		defer sub.Close()
	}

	le, err := a.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]lock.Locker{"own": a, "other": b} {
		before := time.Now()
		info, err := l.Holder(t.Context(), key)
		if err != nil {
			t.Fatalf("%s Locker: Holder of a held key: %v", name, err)
		}
		if info.Key != key || info.Holder != "alpha" {
			t.Errorf("%s Locker: Holder = %+v, want key %q holder %q", name, info, key, "alpha")
		}
		if s.caps.Fencing && info.Token != le.Token() {
			t.Errorf("%s Locker: Holder token %d, the lease's is %d", name, info.Token, le.Token())
		}
		if s.caps.TTL {
			// The engine's expiry is after the lease's local deadline,
			// and no later than a full TTL (rounded up to etcd's whole
			// second) from now.
			if info.ExpiresAt.IsZero() || info.ExpiresAt.After(time.Now().Add(s.cfg.TTL+time.Second)) || info.ExpiresAt.Before(before) {
				t.Errorf("%s Locker: Holder expiry %v is not within a TTL of %v from now", name, info.ExpiresAt, s.cfg.TTL)
			}
		} else if !info.ExpiresAt.IsZero() {
			t.Errorf("%s Locker: Holder expiry %v for a lease without TTL", name, info.ExpiresAt)
		}
	}

	// A waiter of the same Locker: some backends hand the key straight to
	// it on release, which must record the new holder all the same.
	got := make(chan *lock.Lease, 1)
	go func() {
		w, err := a.Acquire(t.Context(), key)
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		got <- w
	}()
	WaitUntilWaiting(t, a, key, 1)
	release(t, le)
	w := <-got
	if w == nil {
		return
	}
	info, err := b.Holder(t.Context(), key)
	switch {
	case err != nil:
		t.Fatalf("Holder after the key passed to a waiter: %v", err)
	case s.caps.Fencing && (info.Token != w.Token() || info.Token <= le.Token()):
		t.Errorf("Holder token %d after the key passed on, want the new lease's %d (> %d)", info.Token, w.Token(), le.Token())
	case info.Holder != "alpha":
		t.Errorf("Holder = %q after the key passed to a waiter of the same Locker, want %q", info.Holder, "alpha")
	}
	if sub != nil {
		drain(sub)
	}
	release(t, w)
	if _, err := b.Holder(t.Context(), key); !errors.Is(err, lock.ErrNoHolder) {
		t.Errorf("Holder after Release = %v, want ErrNoHolder", err)
	}
	if sub != nil {
		// A release that frees the key reaches every watcher.
		select {
		case <-sub.C():
		case <-time.After(30 * time.Second):
			t.Error("WatchHolder's subscription was not woken by a release within 30s")
		}
		sub.Close()
	}

	le, err = b.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := a.Holder(t.Context(), key); err != nil || info.Holder != "beta" || (s.caps.Fencing && info.Token != le.Token()) {
		t.Errorf("Holder = %+v, %v; want holder beta with token %d", info, err, le.Token())
	}
	if s.caps.TTL {
		// Let the lease lapse: once the engine expired it, nobody holds
		// the key, although it was never released.
		<-le.Done()
		deadline := time.Now().Add(10*s.cfg.TTL + 5*time.Second)
		for {
			_, err := a.Holder(t.Context(), key)
			if errors.Is(err, lock.ErrNoHolder) {
				break
			}
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("Holder of an expired lease's key = %v, want ErrNoHolder soon after its TTL", err)
			}
			time.Sleep(s.cfg.TTL / 10)
		}
	}
	_ = le.Release(t.Context())

	if _, err := a.Holder(t.Context(), ""); !errors.Is(err, lock.ErrInvalidKey) {
		t.Errorf("Holder of an empty key = %v, want ErrInvalidKey", err)
	}
	_ = b.Close()
	if _, err := b.Holder(t.Context(), key); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("Holder after Close = %v, want ErrClosed", err)
	}
}

// drain empties a subscription's channel of earlier wake-ups.
func drain(sub lock.Subscription) {
	for {
		select {
		case <-sub.C():
		default:
			return
		}
	}
}
