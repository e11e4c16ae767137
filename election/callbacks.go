package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haita/haita/lock"
)

// Callbacks are what [Election.Run] calls, in the manner of client-go's
// leaderelection.LeaderCallbacks. Unlike client-go's, OnStartedLeading gets
// the Leadership, whose term is a fencing token for the leader's writes.
type Callbacks struct {
	// OnStartedLeading is called on a goroutine of Run's when this
	// candidate starts leading, with a context that is cancelled when the
	// leadership ends or Run's context ends. It should return soon after
	// its context ends: Run waits for it before it resigns. Required.
	OnStartedLeading func(ctx context.Context, ld *Leadership)
	// OnStoppedLeading is called after each leadership ended and
	// OnStartedLeading returned. Optional.
	OnStoppedLeading func()
	// OnNewLeader is called for every change of leader that
	// [Election.Observe] reports, this candidate's own terms included,
	// sequentially on a goroutine of Run's. Optional.
	OnNewLeader func(Leader)
}

// Run campaigns, leads until the leadership ends, and campaigns again,
// calling cb's functions, until ctx ends; then it stops leading (waiting
// for OnStartedLeading to return and resigning) and returns
// context.Cause(ctx). A Campaign that fails for another reason (the engine
// is unreachable) is tried again after Options.PollInterval. It returns an
// error matching [lock.ErrInvalidOptions] at once when
// cb.OnStartedLeading is nil, and [lock.ErrClosed] when the Locker is
// closed. Every goroutine Run starts has ended when it returns.
func (e *Election) Run(ctx context.Context, cb Callbacks) error {
	if cb.OnStartedLeading == nil {
		return fmt.Errorf("%w: election: Callbacks.OnStartedLeading is nil", lock.ErrInvalidOptions)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if cb.OnNewLeader != nil {
		octx, stop := context.WithCancel(ctx)
		defer stop()
		wg.Go(func() { _ = e.Observe(octx, cb.OnNewLeader) })
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for {
		ld, err := e.Campaign(ctx)
		switch {
		case ctx.Err() != nil:
			if ld != nil {
				e.stop(ctx, ld, cb)
			}
			return context.Cause(ctx)
		case err != nil && errors.Is(err, lock.ErrClosed):
			return err
		case err != nil:
			retry.Reset(e.poll)
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-retry.C:
			}
			continue
		}
		lctx, cancel := ld.Context(ctx)
		var lead sync.WaitGroup
		lead.Go(func() { cb.OnStartedLeading(lctx, ld) })
		<-lctx.Done()
		lead.Wait()
		cancel()
		e.stop(ctx, ld, cb)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
}

// stop resigns ld, with a context of its own (ctx may have ended), and
// calls OnStoppedLeading.
func (e *Election) stop(ctx context.Context, ld *Leadership, cb Callbacks) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = ld.Resign(rctx)
	cancel()
	if cb.OnStoppedLeading != nil {
		cb.OnStoppedLeading()
	}
}
