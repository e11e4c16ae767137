package bench

import (
	"context"

	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/haita/haita/election"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
)

// The failover benchmarks measure how long an election is without a leader
// when the leader goes, for haita's election on Redis, PostgreSQL and etcd
// and for etcd's own concurrency.Election, in the same run:
//
//	cd bench && go test -run '^$' -bench 'Failover' -benchtime 200x -count 1 .
//
// FailoverResign: the leader resigns while the other candidate waits in
// Campaign; the figure is from the call of Resign to the return of the
// waiter's Campaign. FailoverKill: the leader stops keeping its lease alive
// without resigning (a killed process: haita's lease is not refreshed,
// etcd's session is orphaned) right after it was elected; the figure is
// from then to the waiter's election, minus the TTL.

// candidate is one contender of an election.
type candidate interface {
	campaign(ctx context.Context) error
	resign(ctx context.Context) error
	// abandon stops keeping the leadership alive without giving it up.
	abandon()
}

// haitaCandidate campaigns with package election.
type haitaCandidate struct {
	e  *election.Election
	ld *election.Leadership
}

func (c *haitaCandidate) campaign(ctx context.Context) (err error) {
	c.ld, err = c.e.Campaign(ctx)
	return err
}
func (c *haitaCandidate) resign(ctx context.Context) error { return c.ld.Resign(ctx) }
func (c *haitaCandidate) abandon()                         { c.ld = nil } // no AutoRefresh: it lapses

// etcdCandidate campaigns with etcd's concurrency.Election; each campaign
// gets a fresh Session, so that an abandoned one can be orphaned.
type etcdCandidate struct {
	cli *clientv3.Client
	ttl time.Duration
	s   *concurrency.Session
	e   *concurrency.Election
}

func (c *etcdCandidate) campaign(ctx context.Context) error {
	if c.s == nil {
		s, err := concurrency.NewSession(c.cli, concurrency.WithTTL(int(c.ttl/time.Second)))
		if err != nil {
			return err
		}
		c.s, c.e = s, concurrency.NewElection(s, "bench-election/")
	}
	return c.e.Campaign(ctx, "v")
}
func (c *etcdCandidate) resign(ctx context.Context) error { return c.e.Resign(ctx) }
func (c *etcdCandidate) abandon()                         { c.s.Orphan(); c.s = nil }

// electors returns, by name, a constructor of candidates with leases of
// ttl, each on a Locker (or Session) of its own as in separate processes.
func electors(b *testing.B, ttl time.Duration, refresh bool) (names []string, m map[string]func() candidate) {
	opts := lock.Options{TTL: ttl, AutoRefresh: refresh}
	key := uniqueKey("failover:")
	haita := func(l lock.Locker, err error) candidate {
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		e, err := election.New(l, key, election.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return &haitaCandidate{e: e}
	}
	m = map[string]func() candidate{}
	if len(redisServers) > 0 {
		m["haita-redis"] = func() candidate {
			c := redis.NewClient(&redis.Options{Addr: redisServers[0]})
			b.Cleanup(func() { _ = c.Close() })
			return haita(redislock.New(c, opts))
		}
	}
	pool := startPG(b)
	if err := pglock.CreateTable(bg, pool, ""); err != nil {
		b.Fatal(err)
	}
	m["haita-pg"] = func() candidate { return haita(pglock.New(pool, opts)) }
	cli := etcdClient(b)
	m["haita-etcd"] = func() candidate { return haita(etcdlock.New(cli, opts)) }
	m["etcd-election"] = func() candidate { return &etcdCandidate{cli: cli, ttl: ttl} }
	for _, n := range []string{"etcd-election", "haita-etcd", "haita-pg", "haita-redis"} {
		if m[n] != nil {
			names = append(names, n)
		}
	}
	return names, m
}

// handover makes leader step down (resign, or abandon when kill) while
// waiter campaigns, and returns the time from the step down to waiter's
// election.
func handover(b *testing.B, leader, waiter candidate, kill bool) time.Duration {
	var wg sync.WaitGroup
	var at time.Time
	wg.Go(func() {
		if err := waiter.campaign(bg); err != nil {
			b.Error(err)
		}
		at = time.Now()
	})
	// Let the waiter reach its wait; on the notifying engines it is then
	// woken by the step down, not by polling.
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if kill {
		leader.abandon()
	} else if err := leader.resign(bg); err != nil {
		b.Fatal(err)
	}
	wg.Wait()
	return at.Sub(start)
}

func benchFailover(b *testing.B, ttl time.Duration, kill bool) {
	names, m := electors(b, ttl, !kill)
	for _, name := range names {
		b.Run("lib="+name, func(b *testing.B) {
			a, c := m[name](), m[name]()
			if err := a.campaign(bg); err != nil {
				b.Fatal(err)
			}
			var ds []time.Duration
			for b.Loop() {
				d := handover(b, a, c, kill)
				if kill {
					// The abandoned lease was granted 20ms before the
					// step down: count from its expiry.
					d -= ttl - 20*time.Millisecond
				}
				ds = append(ds, d)
				a, c = c, a
			}
			if !kill {
				_ = a.resign(bg)
			}
			slices.Sort(ds)
			q := func(p float64) float64 {
				return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(ds[len(ds)-1])/float64(time.Millisecond), "max-ms")
		})
	}
}

// BenchmarkFailoverResign: the next candidate's election after a clean
// Resign.
func BenchmarkFailoverResign(b *testing.B) { benchFailover(b, 30*time.Second, false) }

// BenchmarkFailoverKill: the next candidate's election after the leader
// stopped without resigning, counted from its lease's expiry (TTL 2s).
func BenchmarkFailoverKill(b *testing.B) { benchFailover(b, 2*time.Second, true) }
