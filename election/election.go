package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haita/haita/lock"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNoLeader is returned by [Election.Leader] when nobody leads.
	ErrNoLeader = errors.New("election: no leader")
	// ErrNotLeader is returned by [Leadership.Resign] when the leadership
	// had ended already (lost or resigned), and by [Elector.IsLeader] when
	// this candidate does not lead.
	ErrNotLeader = errors.New("election: not the leader")
)

// DefaultPollInterval is how often [Election.Observe] reads the leader
// when Options.PollInterval is zero.
const DefaultPollInterval = 100 * time.Millisecond

// Options configure an [Election]. The zero value is valid.
type Options struct {
	// PollInterval is how often Observe reads the leader. Zero selects
	// [DefaultPollInterval]. Must not be negative.
	PollInterval time.Duration
}

// Election is one election, identified by its name, which is the lock key
// every candidate campaigns for. Candidates in other processes build their
// own Election with the same name over Lockers on the same engine. An
// Election is safe for concurrent use; its zero value is not: call [New].
type Election struct {
	l    lock.Locker
	name string
	poll time.Duration

	mu        sync.Mutex
	lastTerm  lock.Token // the newest term this Election saw, for Since
	lastSince time.Time
}

// New returns the election name over l. It returns an error matching
// [lock.ErrInvalidOptions] for a nil l or invalid opts, and one matching
// [lock.ErrInvalidKey] for a name that is not a valid lock key. The
// Election does not close l.
func New(l lock.Locker, name string, opts Options) (*Election, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: election: nil Locker", lock.ErrInvalidOptions)
	}
	if opts.PollInterval < 0 {
		return nil, fmt.Errorf("%w: election: PollInterval %v is negative", lock.ErrInvalidOptions, opts.PollInterval)
	}
	if err := lock.ValidateKey(name); err != nil {
		return nil, fmt.Errorf("election: name: %w", err)
	}
	poll := opts.PollInterval
	if poll == 0 {
		poll = DefaultPollInterval
	}
	return &Election{l: l, name: name, poll: poll}, nil
}

// Name returns the election's name: its lock key.
func (e *Election) Name() string { return e.name }

// Leader describes who leads an election.
type Leader struct {
	// Value is what the leader published: its Locker's Options.Holder.
	Value string
	// Term is the leader's fencing token: strictly greater for every later
	// leader of the election.
	Term lock.Token
	// Since is when this Election first saw the term: the grant itself for
	// its own Campaign, otherwise the read that first found it (the engine
	// does not record when a lease was granted).
	Since time.Time
	// ExpiresAt is when the leader's lease ends on the engine unless
	// refreshed, as seen by this client; zero without a TTL.
	ExpiresAt time.Time
}

// Campaign waits until this candidate leads the election, or ctx ends, and
// returns its leadership. It waits as the Locker's Acquire does: woken by
// the engine's notification where it has one. It returns an error matching
// ctx.Err() when ctx ended first, and the Locker's errors otherwise (such as
// [lock.ErrWaitLimit] or [lock.ErrClosed]); then this candidate does not
// lead. An attempt whose outcome the engine did not confirm
// ([lock.ErrIndeterminate]: a slow or unreachable engine, a Redlock vote
// without quorum) or whose grant came after its own deadline
// ([lock.ErrLost]) is not an answer: the Locker has given back whatever it
// may have taken, and Campaign tries again after a short backoff (10ms,
// doubling up to 1s) until ctx ends. The caller must call Resign on the
// Leadership, also after it was lost, so that its background work stops.
func (e *Election) Campaign(ctx context.Context) (*Leadership, error) {
	var le *lock.Lease
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		var err error
		le, err = e.l.Acquire(ctx, e.name)
		if err == nil {
			break
		}
		if (!errors.Is(err, lock.ErrIndeterminate) && !errors.Is(err, lock.ErrLost)) || ctx.Err() != nil {
			return nil, fmt.Errorf("election: campaign %q: %w", e.name, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("election: campaign %q: %w (last attempt: %v)", e.name, ctx.Err(), err)
		case <-t.C:
		}
	}
	ld := &Leadership{e: e, lease: le, since: time.Now()}
	e.saw(le.Token(), ld.since)
	// The value published is whatever the engine stored for this lease;
	// reading it back costs one round trip and tells the truth.
	if info, err := e.l.Holder(ctx, e.name); err == nil && info.Token == le.Token() {
		ld.value = info.Holder
	}
	return ld, nil
}

// saw records that term was seen at t, and returns when it was first seen.
func (e *Election) saw(term lock.Token, t time.Time) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if term != e.lastTerm {
		if term < e.lastTerm {
			return t // an older term read late: nothing to remember
		}
		e.lastTerm, e.lastSince = term, t
	}
	return e.lastSince
}

// Leader reads who leads now, without campaigning. It returns an error
// matching [ErrNoLeader] when nobody does, and the Locker's error when the
// engine did not answer.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	info, err := e.l.Holder(ctx, e.name)
	if errors.Is(err, lock.ErrNoHolder) {
		return Leader{}, fmt.Errorf("election %q: %w", e.name, ErrNoLeader)
	}
	if err != nil {
		return Leader{}, fmt.Errorf("election %q: leader: %w", e.name, err)
	}
	return Leader{Value: info.Holder, Term: info.Token, Since: e.saw(info.Token, time.Now()), ExpiresAt: info.ExpiresAt}, nil
}

// Observe calls f with the leader each time it changes, starting with the
// current one, until ctx ends; then it returns context.Cause(ctx). A
// vacancy (nobody leads) is reported as the zero Leader. Calls to f are
// sequential, on the calling goroutine, and their terms never decrease.
//
// Observe reads the leader when the engine notifies a change — etcd's
// watch reports every change of the election's key; Redis pub/sub and
// PostgreSQL NOTIFY report a leader's resignation, after which Observe
// reads again within milliseconds until the next leader shows — and
// otherwise every Options.PollInterval (memlock, filelock and Redlock have
// no notification for readers; a leader's expiry is noticed by polling). A leader whose whole term falls between two reads
// is not reported. Reads that fail are retried at the next interval. A nil
// f is an error matching [lock.ErrInvalidOptions].
func (e *Election) Observe(ctx context.Context, f func(Leader)) error {
	if f == nil {
		return fmt.Errorf("%w: election: Observe needs a function", lock.ErrInvalidOptions)
	}
	var wake <-chan struct{}
	if sub, err := e.l.WatchHolder(ctx, e.name); err == nil {
		defer sub.Close()
		wake = sub.C()
	}
	var last, newest lock.Token // last reported (0: vacancy), greatest seen
	first := true
	soon := time.Duration(0) // after a notification: read again soon while vacant
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case _, ok := <-wake:
			if !ok {
				wake = nil // the subscription broke: polling takes over
			}
			soon = time.Millisecond
		case <-t.C:
		}
		cur, err := e.Leader(ctx)
		if err == nil || errors.Is(err, ErrNoLeader) {
			switch {
			case first,
				cur.Term == 0 && last != 0,                       // vacancy
				cur.Term > newest,                                // a new leader
				cur.Term != 0 && cur.Term == newest && last == 0: // back after a vacancy read
				f(cur)
				last, newest = cur.Term, max(newest, cur.Term)
			}
			// A term older than the newest is a late read: skipped.
			first = false
		}
		next := e.poll
		if cur.Term == 0 && soon > 0 {
			next, soon = min(soon, e.poll), soon*2
		} else {
			soon = 0
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// Leadership is this candidate's term as leader, from a successful
// [Election.Campaign]. Its methods are safe for concurrent use.
type Leadership struct {
	e     *Election
	lease *lock.Lease
	value string
	since time.Time
}

// Term returns the leadership's term: its lease's fencing token, strictly
// greater for every later leader of the election. Guard writes with it.
func (ld *Leadership) Term() lock.Token { return ld.lease.Token() }

// Value returns the value this leader published, its Locker's
// Options.Holder, as the engine stored it; empty when it could not be read
// back.
func (ld *Leadership) Value() string { return ld.value }

// Since returns when this candidate began to lead.
func (ld *Leadership) Since() time.Time { return ld.since }

// Lease returns the lease that is the leadership, for its expiry or to
// refresh it by hand on a Locker without AutoRefresh.
func (ld *Leadership) Lease() *lock.Lease { return ld.lease }

// Done returns a channel that is closed when the leadership ends: resigned,
// or lost (its local deadline passed, refreshing failed, or the engine
// reported the lease gone).
func (ld *Leadership) Done() <-chan struct{} { return ld.lease.Done() }

// Err returns nil while this candidate leads, an error matching
// [lock.ErrReleased] after Resign and one matching [lock.ErrLost] after the
// leadership was lost.
func (ld *Leadership) Err() error { return ld.lease.Err() }

// Context returns a context derived from parent that is cancelled when the
// leadership ends, with context.Cause returning Err. Call the cancel
// function when done with it.
func (ld *Leadership) Context(parent context.Context) (context.Context, context.CancelFunc) {
	return ld.lease.Context(parent)
}

// Resign ends the leadership and frees the election for the next
// candidate, which a notifying engine wakes at once. It returns an error
// matching [ErrNotLeader] (and [lock.ErrNotHeld]) when the leadership had
// ended already, and one matching [lock.ErrIndeterminate] when the engine
// did not answer: the lease then ends at its TTL.
func (ld *Leadership) Resign(ctx context.Context) error {
	err := ld.lease.Release(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lock.ErrNotHeld):
		return fmt.Errorf("election %q: resign term %d: %w: %w", ld.e.name, ld.Term(), ErrNotLeader, err)
	}
	return fmt.Errorf("election %q: resign term %d: %w", ld.e.name, ld.Term(), err)
}
