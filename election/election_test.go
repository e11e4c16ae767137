package election_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/election"
	"github.com/haita/haita/lock"
)

func newElection(t testing.TB, l lock.Locker, name string) *election.Election {
	t.Helper()
	e, err := election.New(l, name, election.Options{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// observer runs Observe in a goroutine and hands its reports over a
// channel; stop ends it and waits for it.
type observer struct {
	c    chan election.Leader
	stop func()
}

func observe(t *testing.T, e *election.Election) *observer {
	ctx, cancel := context.WithCancel(t.Context())
	o := &observer{c: make(chan election.Leader, 1000)}
	var wg sync.WaitGroup
	wg.Go(func() {
		err := e.Observe(ctx, func(l election.Leader) { o.c <- l })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Observe returned %v, want context.Canceled", err)
		}
	})
	o.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(o.stop)
	return o
}

// next returns the observer's next report that names a leader, skipping
// vacancies.
func (o *observer) next(t *testing.T) election.Leader {
	t.Helper()
	for {
		select {
		case l := <-o.c:
			if l.Term != 0 {
				return l
			}
		case <-time.After(30 * time.Second):
			t.Fatal("observer reported no new leader within 30s")
		}
	}
}

// TestCampaignResignObserve runs one election with two candidates and two
// observers on every engine: the first leads with its value and term, the
// second's Campaign returns only after the first resigned and with a
// greater term, observers see every leader in order (each leader stays
// until both observers reported it), and the errors are the documented
// ones.
func TestCampaignResignObserve(t *testing.T) {
	forEach(t, nil, func(t *testing.T, eng engine, nl newLocker) {
		name := "election/" + t.Name()
		ea := newElection(t, nl(t, "a"), name)
		eb := newElection(t, nl(t, "b"), name)
		eo := newElection(t, nl(t, "observer"), name)
		if _, err := eo.Leader(t.Context()); !errors.Is(err, election.ErrNoLeader) {
			t.Fatalf("Leader before any campaign = %v, want ErrNoLeader", err)
		}
		observers := []*observer{observe(t, eo), observe(t, newElection(t, nl(t, "observer2"), name))}
		seen := func(want election.Leader) {
			t.Helper()
			for i, o := range observers {
				got := o.next(t)
				if got.Term != want.Term || got.Value != want.Value {
					t.Fatalf("observer %d saw %+v next, want term %d value %q", i, got, want.Term, want.Value)
				}
			}
		}

		lda, err := ea.Campaign(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if lda.Term() == 0 || lda.Value() != "a" || lda.Err() != nil {
			t.Fatalf("leadership: term %d value %q err %v", lda.Term(), lda.Value(), lda.Err())
		}
		seen(election.Leader{Term: lda.Term(), Value: "a"})
		if l, err := eo.Leader(t.Context()); err != nil || l.Term != lda.Term() || l.Value != "a" {
			t.Fatalf("Leader = %+v, %v; want a's term %d", l, err, lda.Term())
		}

		var resigning atomic.Bool
		got := make(chan *election.Leadership, 1)
		var wg sync.WaitGroup
		wg.Go(func() {
			ld, err := eb.Campaign(t.Context())
			if err != nil {
				t.Errorf("b's Campaign: %v", err)
			} else if !resigning.Load() {
				t.Errorf("b leads with term %d while a still leads with term %d", ld.Term(), lda.Term())
			}
			got <- ld
		})
		// b is waiting now or soon; a's term stays until it resigns. A
		// second candidate publishing "a" waits too; its Locker is closed
		// before a resigns, so that an acquire it abandoned when its context
		// ended (finished in the background by backends such as mysqllock)
		// cannot take the key after a's resignation, which the observers
		// would rightly report as a leader between a and b.
		la2 := nl(t, "a")
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		if _, err := newElection(t, la2, name).Campaign(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a second Campaign while a leads = %v, want context.DeadlineExceeded", err)
		}
		cancel()
		_ = la2.Close()

		resigning.Store(true)
		if err := lda.Resign(t.Context()); err != nil {
			t.Fatalf("Resign: %v", err)
		}
		<-lda.Done()
		if !errors.Is(lda.Err(), lock.ErrReleased) {
			t.Errorf("Err after Resign = %v, want lock.ErrReleased", lda.Err())
		}
		if err := lda.Resign(t.Context()); !errors.Is(err, election.ErrNotLeader) {
			t.Errorf("second Resign = %v, want ErrNotLeader", err)
		}
		ldb := <-got
		wg.Wait()
		if ldb == nil {
			return
		}
		if ldb.Term() <= lda.Term() || ldb.Value() != "b" {
			t.Fatalf("b leads with term %d value %q after a's term %d", ldb.Term(), ldb.Value(), lda.Term())
		}
		seen(election.Leader{Term: ldb.Term(), Value: "b"})
		if err := ldb.Resign(t.Context()); err != nil {
			t.Fatal(err)
		}

		// More changes of leader, each kept until both observers saw it.
		last := ldb.Term()
		for i := range 4 {
			e := ea
			if i%2 == 1 {
				e = eb
			}
			ld, err := e.Campaign(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if ld.Term() <= last {
				t.Fatalf("term %d after term %d", ld.Term(), last)
			}
			last = ld.Term()
			seen(election.Leader{Term: ld.Term(), Value: ld.Value()})
			if err := ld.Resign(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		for _, o := range observers {
			o.stop()
		}
	})
}

func TestNewBadOptions(t *testing.T) {
	l := engines[0].start(t)(t, "x")
	for _, c := range []struct {
		name string
		l    lock.Locker
		key  string
		opts election.Options
		want error
	}{
		{"nil Locker", nil, "e", election.Options{}, lock.ErrInvalidOptions},
		{"empty name", l, "", election.Options{}, lock.ErrInvalidKey},
		{"negative poll", l, "e", election.Options{PollInterval: -time.Second}, lock.ErrInvalidOptions},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := election.New(c.l, c.key, c.opts); !errors.Is(err, c.want) {
				t.Errorf("New = %v, want %v", err, c.want)
			}
		})
	}
}

// TestObserveByNotification observes elections with a poll interval of an
// hour: every handover after a Resign still arrives, woken by the engine's
// notification (etcd watch, Redis pub/sub, PostgreSQL NOTIFY).
func TestObserveByNotification(t *testing.T) {
	notifying := func(e engine) bool { return e.name == "etcdlock" || e.name == "redis" || e.name == "pglock" }
	forEach(t, notifying, func(t *testing.T, eng engine, nl newLocker) {
		name := "election/" + t.Name()
		cands := []*election.Election{newElection(t, nl(t, "a"), name), newElection(t, nl(t, "b"), name)}
		ld, err := cands[0].Campaign(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		eo, err := election.New(nl(t, "observer"), name, election.Options{PollInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		o := observe(t, eo)
		if got := o.next(t); got.Term != ld.Term() {
			t.Fatalf("first report %+v, want term %d", got, ld.Term())
		}
		for i := 1; i <= 4; i++ {
			got := make(chan *election.Leadership, 1)
			go func() {
				next, err := cands[i%2].Campaign(t.Context())
				if err != nil {
					t.Error(err)
				}
				got <- next
			}()
			if err := ld.Resign(t.Context()); err != nil {
				t.Fatal(err)
			}
			if ld = <-got; ld == nil {
				return
			}
			if l := o.next(t); l.Term != ld.Term() {
				t.Fatalf("observed %+v, want term %d", l, ld.Term())
			}
		}
		_ = ld.Resign(t.Context())
		o.stop()
	})
}

// TestCancelledCampaignLeavesNothing: a Campaign whose context ends while
// it waits leaves nothing behind in the engine (etcd's Election has left
// its key after a failed Campaign, etcd issue 21128): once the leader
// resigns nobody leads (a leftover key or grant would show as the leader),
// and the next candidate leads.
func TestCancelledCampaignLeavesNothing(t *testing.T) {
	forEach(t, nil, func(t *testing.T, eng engine, nl newLocker) {
		name := "election/" + t.Name()
		ea, eb, ec := newElection(t, nl(t, "a"), name), newElection(t, nl(t, "b"), name), newElection(t, nl(t, "c"), name)
		lda, err := ea.Campaign(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		_, err = eb.Campaign(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Campaign while a leads = %v, want context.DeadlineExceeded", err)
		}
		if err := lda.Resign(t.Context()); err != nil {
			t.Fatal(err)
		}
		// b's last attempt may still be running at the engine (an SQL
		// server finishes a statement whose client gave up) and may take
		// the key a resigned; lock.Detached gives it back when the answer
		// comes. So b may lead for that long, but nobody else may, and the
		// election must end up without a leader.
		for deadline := time.Now().Add(30 * time.Second); ; {
			l, err := ec.Leader(t.Context())
			if errors.Is(err, election.ErrNoLeader) {
				break
			}
			if err != nil || l.Value != "b" {
				t.Fatalf("Leader after the only leader resigned = %+v, %v; want ErrNoLeader", l, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("b's abandoned attempt still leads (term %d) after 30s", l.Term)
			}
			time.Sleep(10 * time.Millisecond)
		}
		ldc, err := ec.Campaign(t.Context())
		if err != nil {
			t.Fatalf("c's Campaign after a resigned: %v", err)
		}
		_ = ldc.Resign(t.Context())
	})
}
