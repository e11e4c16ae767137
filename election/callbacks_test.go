package election_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/haita/haita/election"
	"github.com/haita/haita/lock"
)

var _ gocron.Elector = (*election.Elector)(nil)

// TestRunCallbacks runs two candidates with Run: the first leads
// (OnStartedLeading with a live context), the second takes over only after
// the first's Run ended and called OnStoppedLeading, and OnNewLeader sees
// both terms in order.
func TestRunCallbacks(t *testing.T) {
	forEach(t, func(e engine) bool { return e.name == "memlock" || e.name == "redis" }, func(t *testing.T, eng engine, nl newLocker) {
		name := "election/" + t.Name()
		type event struct {
			who  string
			what string
			term lock.Token
		}
		events := make(chan event, 100)
		var leading atomic.Int32
		run := func(ctx context.Context, who string) error {
			e := newElection(t, nl(t, who), name)
			return e.Run(ctx, election.Callbacks{
				OnStartedLeading: func(ctx context.Context, ld *election.Leadership) {
					if n := leading.Add(1); n != 1 {
						t.Errorf("%s leads while %d others do", who, n-1)
					}
					events <- event{who, "started", ld.Term()}
					<-ctx.Done()
					leading.Add(-1)
				},
				OnStoppedLeading: func() { events <- event{who, "stopped", 0} },
				OnNewLeader:      func(l election.Leader) { events <- event{who, "new " + l.Value, l.Term} },
			})
		}
		var pending []event // received, not yet looked for
		next := func(who, what string) event {
			t.Helper()
			for {
				for i, ev := range pending {
					if ev.who == who && ev.what == what {
						pending = append(pending[:i], pending[i+1:]...)
						return ev
					}
				}
				select {
				case ev := <-events:
					pending = append(pending, ev)
				case <-time.After(30 * time.Second):
					t.Fatalf("no %q from %s within 30s; got %v", what, who, pending)
				}
			}
		}
		ctxA, stopA := context.WithCancel(t.Context())
		ctxB, stopB := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		wg.Go(func() { errs <- run(ctxA, "a") })
		a := next("a", "started")
		next("a", "new a")
		wg.Go(func() { errs <- run(ctxB, "b") })
		next("b", "new a") // b observes a before a steps down
		stopA()
		next("a", "stopped")
		b := next("b", "started")
		if b.term <= a.term {
			t.Errorf("b's term %d is not greater than a's %d", b.term, a.term)
		}
		next("b", "new b")
		stopB()
		next("b", "stopped")
		wg.Wait()
		for range 2 {
			if err := <-errs; !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		}
	})
}

// TestGocronElector runs two gocron schedulers with one job each, elected
// through Electors on Redis: only the leader's scheduler runs the job, and
// when the leader's Elector stops, the other scheduler takes over.
func TestGocronElector(t *testing.T) {
	nl := engines[2].start(t) // redis
	name := "election/" + t.Name()
	runs := make(chan int, 1000)
	type node struct {
		el   *election.Elector
		stop context.CancelFunc
		wg   sync.WaitGroup
	}
	nodes := make([]*node, 2)
	start := func(i int) {
		n := &node{el: election.NewElector(newElection(t, nl(t, fmt.Sprint("node", i)), name))}
		nodes[i] = n
		ctx, cancel := context.WithCancel(t.Context())
		n.stop = func() { cancel(); n.wg.Wait() }
		t.Cleanup(n.stop)
		n.wg.Go(func() { _ = n.el.Run(ctx) })
		s, err := gocron.NewScheduler(gocron.WithDistributedElector(n.el))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Shutdown() })
		if _, err := s.NewJob(gocron.DurationJob(10*time.Millisecond), gocron.NewTask(func() { runs <- i })); err != nil {
			t.Fatal(err)
		}
		s.Start()
	}
	next := func() int {
		t.Helper()
		select {
		case i := <-runs:
			return i
		case <-time.After(30 * time.Second):
			t.Fatal("no job ran within 30s")
			return -1
		}
	}
	start(0)
	if got := next(); got != 0 {
		t.Fatalf("job ran on node %d, want the only node 0", got)
	}
	start(1)
	for range 10 {
		if got := next(); got != 0 {
			t.Fatalf("job ran on node %d while node 0 leads", got)
		}
	}
	if err := nodes[1].el.IsLeader(t.Context()); !errors.Is(err, election.ErrNotLeader) {
		t.Errorf("node 1 IsLeader = %v, want ErrNotLeader", err)
	}
	nodes[0].stop() // resigns
	if err := nodes[0].el.IsLeader(t.Context()); !errors.Is(err, election.ErrNotLeader) {
		t.Errorf("stopped node 0 IsLeader = %v, want ErrNotLeader", err)
	}
	// A run node 0 started before it resigned may still arrive; after
	// node 1's first run, only node 1 runs the job.
	for next() != 1 {
	}
	for range 10 {
		if got := next(); got != 1 {
			t.Fatalf("job ran on node %d after node 1 took over", got)
		}
	}
}
