package election

import (
	"context"
	"fmt"
	"sync"
)

// Elector makes an [Election] the leader election of gocron v2 schedulers
// (gocron.WithDistributedElector): only the scheduler whose Elector leads
// runs jobs. [Elector.Run] keeps the candidate campaigning; IsLeader is
// what gocron asks before each run. An Elector is safe for concurrent use;
// build it with [NewElector].
type Elector struct {
	e  *Election
	mu sync.Mutex
	ld *Leadership // the current leadership; nil when not leading
}

// NewElector returns an Elector campaigning in e once Run is called.
func NewElector(e *Election) *Elector { return &Elector{e: e} }

// Run campaigns and leads until ctx ends, as [Election.Run] does, and then
// resigns and returns context.Cause(ctx). The caller runs it on a
// goroutine of its own and waits for it to return.
func (el *Elector) Run(ctx context.Context) error {
	return el.e.Run(ctx, Callbacks{
		OnStartedLeading: func(ctx context.Context, ld *Leadership) {
			el.mu.Lock()
			el.ld = ld
			el.mu.Unlock()
			<-ctx.Done()
			el.mu.Lock()
			el.ld = nil
			el.mu.Unlock()
		},
	})
}

// IsLeader implements gocron's Elector: nil while this candidate leads
// (its leadership has not ended, by the client's own clock), otherwise an
// error matching [ErrNotLeader].
func (el *Elector) IsLeader(context.Context) error {
	el.mu.Lock()
	ld := el.ld
	el.mu.Unlock()
	if ld == nil || ld.Err() != nil {
		return fmt.Errorf("election %q: %w", el.e.name, ErrNotLeader)
	}
	return nil
}

// Leadership returns the current leadership, for its term as a fencing
// token, or nil when this candidate does not lead.
func (el *Elector) Leadership() *Leadership {
	el.mu.Lock()
	defer el.mu.Unlock()
	if el.ld == nil || el.ld.Err() != nil {
		return nil
	}
	return el.ld
}
