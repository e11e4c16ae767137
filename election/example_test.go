package election_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/haita/haita/election"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// Two candidates campaign for the election "scheduler"; the second leads
// once the first resigns, with a greater term. Any Locker works the same
// way: redislock, pglock, etcdlock and the others, with a TTL and
// AutoRefresh so that a leader that stops loses its leadership.
func Example() {
	ctx := context.Background()
	var shared memlock.Locker
	newCandidate := func(name string) *election.Election {
		l, err := shared.With(lock.Options{Holder: name})
		if err != nil {
			panic(err)
		}
		e, err := election.New(l, "scheduler", election.Options{})
		if err != nil {
			panic(err)
		}
		return e
	}
	a, b := newCandidate("api-1"), newCandidate("api-2")

	lda, err := a.Campaign(ctx)
	if err != nil {
		panic(err)
	}
	leader, _ := b.Leader(ctx)
	fmt.Println("leader:", leader.Value, "term", leader.Term)

	granted := make(chan *election.Leadership)
	go func() {
		ld, err := b.Campaign(ctx) // waits while api-1 leads
		if err != nil {
			panic(err)
		}
		granted <- ld
	}()
	// Work done as leader runs under lda's context, which ends when the
	// leadership is lost; writes carry lda.Term() as a fencing token.
	if err := lda.Resign(ctx); err != nil {
		panic(err)
	}
	ldb := <-granted
	fmt.Println("leader:", ldb.Value(), "term", ldb.Term(), "greater:", ldb.Term() > lda.Term())
	fmt.Println(errors.Is(lda.Resign(ctx), election.ErrNotLeader))
	_ = ldb.Resign(ctx)
	_, err = a.Leader(ctx)
	fmt.Println(errors.Is(err, election.ErrNoLeader))
	// Output:
	// leader: api-1 term 1
	// leader: api-2 term 2 greater: true
	// true
	// true
}

// An Elector makes gocron schedulers on several nodes run their jobs on
// the leader only. Here one node, on memlock; with pglock, redislock or
// etcdlock the schedulers may run in different processes.
func ExampleElector() {
	ctx, stop := context.WithCancel(context.Background())
	l, err := memlock.New(lock.Options{Holder: "node-1"})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	e, err := election.New(l, "reports", election.Options{})
	if err != nil {
		panic(err)
	}
	el := election.NewElector(e)
	var wg sync.WaitGroup
	wg.Go(func() { _ = el.Run(ctx) }) // campaigns until ctx ends, then resigns
	for el.IsLeader(ctx) != nil {
		time.Sleep(time.Millisecond)
	}

	s, err := gocron.NewScheduler(gocron.WithDistributedElector(el))
	if err != nil {
		panic(err)
	}
	ran := make(chan struct{})
	if _, err := s.NewJob(gocron.OneTimeJob(gocron.OneTimeJobStartImmediately()),
		gocron.NewTask(func() { close(ran) })); err != nil {
		panic(err)
	}
	s.Start()
	<-ran
	fmt.Println("the job ran on the leader, term", el.Leadership().Term())
	_ = s.Shutdown()
	stop()
	wg.Wait()
	fmt.Println(errors.Is(el.IsLeader(context.Background()), election.ErrNotLeader))
	// Output:
	// the job ran on the leader, term 1
	// true
}

// Store is storage that keeps the greatest fencing token that wrote and
// refuses a write with a smaller one (package sqlcc has the SQL for it).
type Store interface {
	Write(ctx context.Context, data []byte, token lock.Token) error
}

// Lead a scheduler: campaign, work under the leadership's context, and
// fence every write with the term. The README's election snippet is the
// body of leadScheduler.
func Example_scheduler() {
	var shared memlock.Locker // any Locker: redislock, pglock, etcdlock, ...
	locker, err := shared.With(lock.Options{Holder: "api-1"})
	if err != nil {
		panic(err)
	}
	var store Store // the application's storage
	if err := leadScheduler(context.Background(), locker, store, []byte("…")); err != nil {
		fmt.Println(err)
	}
}

func leadScheduler(ctx context.Context, locker lock.Locker, store Store, data []byte) error {
	e, err := election.New(locker, "scheduler", election.Options{}) // the Locker's Options.Holder is the published value
	if err != nil {
		return err
	}
	ld, err := e.Campaign(ctx) // waits until this candidate leads
	if err != nil {
		return err
	}
	defer ld.Resign(context.WithoutCancel(ctx)) // the next candidate is woken at once
	ctx, cancel := ld.Context(ctx)              // cancelled when leadership is lost (local clock, before the engine lets go)
	defer cancel()

	// ... the scheduler's work under ctx ...

	return store.Write(ctx, data, ld.Term()) // the term is a fencing token: greater for every later leader
}
