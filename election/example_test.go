package election_test

import (
	"context"
	"errors"
	"fmt"

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
