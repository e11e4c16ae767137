package faults

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/sqlcc"
)

// Fault 3: network faults between a client and its engine, through an
// in-process toxiproxy. The probe and the resource are reached directly:
// the holder is cut off from the lock service, not from the resource.

// proxy starts a toxiproxy in front of upstream, stopped by t's cleanup.
func proxy(t testing.TB, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "p", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// toxic adds a toxic, described as toxiproxy's API takes it, and returns a
// function that removes it.
func toxic(t testing.TB, p *toxiproxy.Proxy, typ, stream string, attrs string) func() {
	t.Helper()
	name := typ + "_" + stream
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"attributes":{%s}}`, name, typ, stream, attrs)
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatal(err)
	}
	removed := false
	remove := func() {
		if !removed {
			removed = true
			p.Toxics.RemoveToxic(context.Background(), name)
		}
	}
	t.Cleanup(remove)
	return remove
}

// netRig is a backend whose lockers reach the engine through a proxy.
type netRig struct {
	*rig
	p *toxiproxy.Proxy
	// proxied returns a Locker that talks through the proxy.
	proxied func(t testing.TB, opts lock.Options) lock.Locker
	// direct returns one that does not.
	direct func(t testing.TB, opts lock.Options) lock.Locker
}

func redisNet(t *testing.T) *netRig {
	r, srv := redisRig(t, redisNoPersistence)
	p := proxy(t, srv.Addr())
	c := redisClient(t, p.Listen)
	return &netRig{rig: r, p: p, direct: r.newLocker,
		proxied: func(t testing.TB, opts lock.Options) lock.Locker { return closeWith(t)(redislockNew(c, opts)) }}
}

func pgNet(t *testing.T) *netRig {
	r := pgRig(t)
	u, err := url.Parse(r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := proxy(t, u.Host)
	u.Host = p.Listen
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return &netRig{rig: r, p: p, direct: r.newLocker,
		proxied: func(t testing.TB, opts lock.Options) lock.Locker {
			return closeWith(t)(pglock.NewDB(db, opts))
		}}
}

func etcdNet(t *testing.T) *netRig {
	r, cluster, _ := etcdRig(t, 1)
	u, err := url.Parse(cluster.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	p := proxy(t, u.Host)
	cli := etcdClient(t, []string{"http://" + p.Listen})
	return &netRig{rig: r, p: p, direct: r.newLocker,
		proxied: func(t testing.TB, opts lock.Options) lock.Locker {
			return closeWith(t)(etcdlock.New(cli, opts))
		}}
}

// setUp takes key through l before a fault is injected. A connection still
// recovering from the previous subtest's fault can make the grant arrive
// after its own deadline, which the core rightly refuses (ErrLost): try
// again then.
func setUp(t testing.TB, l lock.Locker, key string) *lock.Lease {
	t.Helper()
	var err error
	for range 5 {
		var le *lock.Lease
		if le, err = l.TryAcquire(context.Background(), key); err == nil {
			return le
		}
		if !errors.Is(err, lock.ErrLost) && !errors.Is(err, lock.ErrIndeterminate) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("set-up acquire of %q: %v", key, err)
	return nil
}

// freeWithin waits until a direct Locker can take key, at most d, and
// returns the lease's token and how long it took.
func freeWithin(t testing.TB, n *netRig, key string, d time.Duration) (lock.Token, time.Duration) {
	t.Helper()
	start := time.Now()
	l := n.direct(t, lock.Options{TTL: 30 * time.Second, WaitLimit: d})
	le, err := l.Acquire(context.Background(), key)
	if err != nil {
		t.Fatalf("key not free within %v: %v", d, err)
	}
	if err := le.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	return le.Token(), time.Since(start)
}

// tokenNow takes and releases key directly and returns its token.
func tokenNow(t testing.TB, n *netRig, key string) lock.Token {
	tok, _ := freeWithin(t, n, key, 10*time.Second)
	return tok
}

// neverGranted fails t when an acquire under a fault reported a grant.
func neverGranted(t testing.TB, what string, le *lock.Lease, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: acquire reported success (token %d) while the engine was unreachable", what, le.Token())
	}
}

func networkFaults(t *testing.T, n *netRig) {
	ttl := n.ttl
	// Every subtest uses its own key; the proxy carries one toxic at a time.

	t.Run("LatencyNearTTL", func(t *testing.T) {
		key := uniqueKey(t, "latency")
		l := n.proxied(t, lock.Options{TTL: ttl})
		_, _ = l.TryAcquire(context.Background(), "warm-up/"+key) // open the connection
		remove := toxic(t, n.p, "latency", "downstream", fmt.Sprintf(`"latency":%d`, (ttl*6/10).Milliseconds()))
		sent := time.Now()
		le, err := l.TryAcquire(context.Background(), key)
		remove()
		if err != nil {
			t.Logf("acquire with a reply delayed by 0.6 TTL: %v (refused, which is safe)", err)
			freeWithin(t, n, key, ttl+10*time.Second)
			return
		}
		errAtReturn := le.Err()
		returned := time.Now()
		defer le.Release(context.Background())
		if limit := sent.Add(ttl); !le.Expiry().Before(limit) {
			t.Errorf("local deadline %v after send + TTL", le.Expiry().Sub(sent))
		}
		t.Logf("grant arrived after %v; local deadline %v after the send", returned.Sub(sent).Round(time.Millisecond), le.Expiry().Sub(sent).Round(time.Millisecond))
		if errAtReturn != nil || !returned.Before(le.Expiry()) {
			// A grant past its own deadline must never be handed out:
			// Acquire gives it back and reports ErrLost instead.
			t.Errorf("lease returned %v past its local deadline (Err %v)", returned.Sub(le.Expiry()).Round(time.Millisecond), errAtReturn)
			return
		}
		// The engine's expiry, from its remaining time read directly: it
		// lies before probe's end + left. The local deadline must not be
		// later. (Comparing the moment Done closes with a probe taken after
		// it would only measure timer and probe delays on a loaded machine.)
		left, held, err := n.probe(context.Background(), key, le.Owner())
		probed := time.Now()
		if err != nil || !held {
			t.Fatalf("engine does not hold a lease just granted (held %v, %v)", held, err)
		}
		if engine := probed.Add(left); le.Expiry().After(engine) {
			t.Errorf("local deadline %v after the engine's expiry", le.Expiry().Sub(engine))
		} else {
			t.Logf("local deadline %v before the engine's expiry", engine.Sub(le.Expiry()).Round(time.Millisecond))
		}
		<-le.Done()
		if !errors.Is(le.Err(), lock.ErrLost) {
			t.Errorf("Err after the deadline = %v, want ErrLost", le.Err())
		}
	})

	t.Run("LatencyBeyondTTL", func(t *testing.T) {
		key := uniqueKey(t, "beyond")
		l := n.proxied(t, lock.Options{TTL: ttl})
		_, _ = l.TryAcquire(context.Background(), "warm-up/"+key)
		remove := toxic(t, n.p, "latency", "downstream", fmt.Sprintf(`"latency":%d`, (ttl+ttl/5).Milliseconds()))
		le, err := l.TryAcquire(context.Background(), key)
		remove()
		if err == nil {
			late := time.Since(le.Expiry())
			le.Release(context.Background())
			t.Fatalf("a grant that arrived %v after its local deadline was handed out", late.Round(time.Millisecond))
		}
		if !errors.Is(err, lock.ErrLost) && !errors.Is(err, lock.ErrIndeterminate) {
			t.Errorf("grant slower than the TTL: %v, want ErrLost (or ErrIndeterminate)", err)
		}
		t.Logf("grant slower than the TTL refused: %v", err)
		// It was given back: the key is free well before the TTL would free it.
		freeWithin(t, n, key, ttl+10*time.Second)
	})

	// The same late reply while the caller's context has time left: the
	// error must not match the context's errors, or a caller that checks
	// its own deadline first blames the wrong thing.
	t.Run("LatencyBeyondTTLLiveContext", func(t *testing.T) {
		key := uniqueKey(t, "beyondlive")
		l := n.proxied(t, lock.Options{TTL: ttl})
		_, _ = l.TryAcquire(context.Background(), "warm-up/"+key)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		remove := toxic(t, n.p, "latency", "downstream", fmt.Sprintf(`"latency":%d`, (ttl+ttl/5).Milliseconds()))
		le, err := l.TryAcquire(ctx, key)
		remove()
		if err == nil {
			le.Release(context.Background())
			t.Fatal("a grant slower than the TTL was handed out")
		}
		if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
			t.Errorf("grant slower than the TTL, caller's context alive: %v matches the context's errors", err)
		}
		if !errors.Is(err, lock.ErrLost) && !errors.Is(err, lock.ErrIndeterminate) {
			t.Errorf("grant slower than the TTL: %v, want ErrLost (or ErrIndeterminate)", err)
		}
		t.Logf("grant slower than the TTL refused: %v", err)
		freeWithin(t, n, key, ttl+10*time.Second)
	})

	t.Run("Blackhole", func(t *testing.T) {
		key := uniqueKey(t, "blackhole")
		l := n.proxied(t, lock.Options{TTL: ttl})
		remove := toxic(t, n.p, "timeout", "upstream", `"timeout":0`)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		le, err := l.TryAcquire(ctx, key)
		cancel()
		remove()
		neverGranted(t, "blackhole", le, err)
		if !errors.Is(err, lock.ErrIndeterminate) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("acquire into a black hole: %v, want ErrIndeterminate or the context's error", err)
		}
		t.Logf("acquire into a black hole: %v", err)
		_, d := freeWithin(t, n, key, ttl+10*time.Second)
		t.Logf("key free for a direct client after %v", d.Round(time.Millisecond))
	})

	t.Run("ResetOnSend", func(t *testing.T) {
		key := uniqueKey(t, "reset")
		l := n.proxied(t, lock.Options{TTL: ttl})
		remove := toxic(t, n.p, "reset_peer", "upstream", `"timeout":0`)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		le, err := l.TryAcquire(ctx, key)
		cancel()
		remove()
		neverGranted(t, "reset", le, err)
		t.Logf("acquire over a connection reset on send: %v", err)
		freeWithin(t, n, key, ttl+10*time.Second)
	})

	t.Run("AcquireResponseLost", func(t *testing.T) {
		key := uniqueKey(t, "lostacquire")
		before := tokenNow(t, n, key)
		l := n.proxied(t, lock.Options{TTL: ttl})
		_, _ = l.TryAcquire(context.Background(), "warm-up/"+key) // open the connection
		remove := toxic(t, n.p, "reset_peer", "downstream", `"timeout":0`)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		le, err := l.TryAcquire(ctx, key)
		cancel()
		remove()
		neverGranted(t, "lost response", le, err)
		if !errors.Is(err, lock.ErrIndeterminate) {
			t.Errorf("acquire whose response was lost: %v, want ErrIndeterminate", err)
		}
		after, d := freeWithin(t, n, key, ttl+10*time.Second)
		t.Logf("acquire whose response was lost: %v; key free again after %v; tokens %d before, %d after", err, d.Round(time.Millisecond), before, after)
		if after <= before+1 && !strings.HasPrefix(n.name, "etcd") {
			t.Logf("the engine did not apply the acquire (tokens %d, %d): the reset came before it", before, after)
		}
	})

	t.Run("ReleaseResponseLost", func(t *testing.T) {
		key := uniqueKey(t, "lostrelease")
		l := n.proxied(t, lock.Options{TTL: ttl})
		le := setUp(t, l, key)
		remove := toxic(t, n.p, "reset_peer", "downstream", `"timeout":0`)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := le.Release(ctx)
		cancel()
		remove()
		if err == nil {
			t.Fatal("release whose response was lost reported success")
		}
		if !errors.Is(err, lock.ErrIndeterminate) {
			t.Errorf("release whose response was lost: %v, want ErrIndeterminate", err)
		}
		_, held, perr := n.probe(context.Background(), key, le.Owner())
		t.Logf("release whose response was lost: %v; engine still holds it: %v (%v)", err, held, perr)
		freeWithin(t, n, key, ttl+10*time.Second)
	})

	t.Run("HolderCutOff", func(t *testing.T) {
		key := uniqueKey(t, "cutoff")
		pgInit(t, n.db, key)
		l := n.proxied(t, lock.Options{TTL: ttl, AutoRefresh: true})
		le := setUp(t, l, key)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_ = le.Release(ctx) // cut off: ErrIndeterminate or ErrNotHeld
		}()
		if err := pgWrite(context.Background(), n.db, key, le.Token(), 1); err != nil {
			t.Fatal(err)
		}
		toxic(t, n.p, "timeout", "upstream", `"timeout":0`)
		toxic(t, n.p, "timeout", "downstream", `"timeout":0`)
		// The local deadline must not lie after the engine's expiry. Read
		// it before the probe: it then comes from a refresh answered, so
		// applied, before the probe, and the engine's expiry lies before
		// the probe's end + its remaining time (or the probe's end, if it
		// no longer holds the lease). A probe taken after Done closed
		// would only measure the timer's and the probe's delays against
		// the drift allowance on a loaded machine.
		local := le.Expiry()
		left, held, err := n.probe(context.Background(), key, le.Owner())
		probed := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			left = 0
		}
		if strings.HasPrefix(n.name, "etcd") {
			left += time.Second // etcd reports whole seconds, rounded down
		}
		if engine := probed.Add(left); local.After(engine) {
			t.Errorf("cut-off holder's local deadline %v after the engine's expiry (held %v)", local.Sub(engine), held)
		}
		var doneAt time.Time
		select {
		case <-le.Done():
			doneAt = time.Now()
		case <-time.After(3 * ttl):
			t.Fatal("cut-off holder's lease did not end")
		}
		if !errors.Is(le.Err(), lock.ErrLost) {
			t.Errorf("cut-off holder's Err: %v, want ErrLost", le.Err())
		}
		next := n.direct(t, lock.Options{TTL: 30 * time.Second, WaitLimit: ttl + 20*time.Second})
		le2, err := next.Acquire(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		defer le2.Release(context.Background())
		t.Logf("Done closed %v before the next holder got the key", time.Since(doneAt).Round(time.Millisecond))
		if err := pgWrite(context.Background(), n.db, key, le2.Token(), 2); err != nil {
			t.Fatal(err)
		}
		// The cut-off holder still reaches the resource; the fence refuses it.
		if err := pgWrite(context.Background(), n.db, key, le.Token(), 3); !errors.Is(err, sqlcc.ErrStaleToken) {
			t.Errorf("cut-off holder's write: %v, want ErrStaleToken", err)
		}
	})
}

func TestNetworkRedis(t *testing.T)    { networkFaults(t, redisNet(t)) }
func TestNetworkPostgres(t *testing.T) { networkFaults(t, pgNet(t)) }
func TestNetworkEtcd(t *testing.T)     { networkFaults(t, etcdNet(t)) }
