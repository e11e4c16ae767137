package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lease is one holder's claim on a key, handed out by a [Locker]. Its
// methods are safe for concurrent use. The holder must call Release when
// done, also after the lease was lost, so that background work stops.
//
// A lease can end without Release — its local deadline passes, refreshing
// fails or the engine reports it gone — and then Done is closed and Err
// returns [ErrLost]. Guard writes with [Lease.Token].
type Lease struct {
	l       *locker
	req     Request
	token   Token
	granted time.Time

	mu          sync.Mutex
	deadline    time.Time     // local deadline on the monotonic clock; zero: none
	timer       *time.Timer   // ends the lease at deadline; armed by the first Done
	done        chan struct{} // created on first use
	err         error         // nil while held
	stopRefresh context.CancelFunc
	refreshDone chan struct{}
}

// closedChan is shared by every lease that ended before Done was called.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Key returns the lease's key.
func (le *Lease) Key() string { return le.req.Key }

// Token returns the lease's fencing token; zero when the backend has no
// fencing (see Capabilities.Fencing).
func (le *Lease) Token() Token { return le.token }

// Owner returns the lease's random owner value as stored by the engine.
// Whoever knows it can release the key: do not show it to others.
func (le *Lease) Owner() string { return le.req.Owner.String() }

// Expiry returns the local deadline: the lease is considered lost at this
// moment unless refreshed first. It is before the engine's own expiry by the
// request's send time and the drift allowance. Zero means no expiry.
func (le *Lease) Expiry() time.Time {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.deadline
}

// Check reports whether the lease still holds its key as far as this
// client can tell, reading the clock at the call: nil while it is held, and
// otherwise its Err — [ErrReleased] or an error matching [ErrLost], also
// when the local deadline ([Lease.Expiry]) has passed but the timer that
// ends the lease has not run yet (the process was paused, say). In that
// case Check ends the lease itself, so Done and Err follow at once.
//
// Call Check right before every write the lease guards. Done and Err are
// updated by a timer and may lag behind the deadline after a pause; watch
// Done (or [Lease.Context]) to stop long work early, but do not rely on it
// at the moment of a write. Check cannot see a pause that begins after it
// returns: storage that must never take a stale write checks the [Token].
func (le *Lease) Check() error {
	le.mu.Lock()
	err, deadline := le.err, le.deadline
	le.mu.Unlock()
	if err != nil || deadline.IsZero() || time.Now().Before(deadline) {
		return err
	}
	le.expire()
	return le.Err()
}

// Done returns a channel that is closed when the lease ends: released,
// expired or lost. It is closed by a timer at the local deadline, which can
// fire late: before a write, use [Lease.Check].
func (le *Lease) Done() <-chan struct{} {
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.done == nil {
		if le.err != nil {
			return closedChan
		}
		le.done = make(chan struct{})
		le.arm()
	}
	return le.done
}

// arm starts the timer that ends the lease at its local deadline. A lease
// gets it only once something can observe the end as it happens — Done,
// auto-refresh, metrics — so a short lease nobody watches pays for no
// timer; Err and Check read the clock instead. le.mu is held.
func (le *Lease) arm() {
	if le.timer == nil && !le.deadline.IsZero() {
		le.timer = time.AfterFunc(time.Until(le.deadline), le.expire)
	}
}

// Err returns nil while the lease is held, [ErrReleased] after a Release
// that did not report [ErrNotHeld], and an error matching [ErrLost] after
// the lease ended otherwise (including a Release that found the key no
// longer held). Like Done it may lag behind the local deadline; before a
// write, use [Lease.Check].
func (le *Lease) Err() error {
	le.mu.Lock()
	err, deadline, unarmed := le.err, le.deadline, le.timer == nil
	le.mu.Unlock()
	if err != nil || !unarmed || deadline.IsZero() || time.Now().Before(deadline) {
		return err
	}
	// No timer watches this lease (nobody called Done): the clock says
	// it has ended.
	le.expire()
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.err
}

// Context returns a context derived from parent that is cancelled when the
// lease ends, with [context.Cause] returning the lease's Err. Call the
// cancel function when done with it.
func (le *Lease) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	done := le.Done()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-done:
			cancel(le.Err())
		case <-stop:
		case <-ctx.Done():
		}
	})
	var once sync.Once
	return ctx, func() {
		once.Do(func() { close(stop); wg.Wait(); cancel(context.Canceled) })
	}
}

// Refresh extends the lease to a full TTL from now. It returns an error
// matching [ErrNotHeld] when the lease no longer holds its key (the lease
// then ends with ErrLost) and one matching [ErrIndeterminate] when the engine
// did not answer; the lease stays valid until its deadline in that case.
// For backends without TTL it does nothing.
func (le *Lease) Refresh(ctx context.Context) error {
	if err := le.Err(); err != nil {
		return fmt.Errorf("lock: refresh %q: %w (%w)", le.req.Key, ErrNotHeld, err)
	}
	if le.req.TTL == 0 {
		return nil
	}
	sent := time.Now()
	err := le.l.b.Refresh(ctx, le.req)
	switch {
	case err == nil:
		le.mu.Lock()
		ended := le.err != nil
		if !ended {
			le.deadline = sent.Add(le.req.TTL - le.l.drift)
			if le.timer != nil {
				le.timer.Reset(time.Until(le.deadline))
			}
		}
		le.mu.Unlock()
		if ended {
			// The lease ended locally while the engine extended it: give
			// the key back rather than leave it blocked for a TTL.
			_ = le.l.b.Release(ctx, le.req)
			return fmt.Errorf("lock: refresh %q: %w (the lease ended first)", le.req.Key, ErrNotHeld)
		}
		return nil
	case errors.Is(err, ErrNotHeld):
		le.l.opts.Metrics.refreshFailed(le.l.caps.Name)
		le.end(fmt.Errorf("%w: refresh found the key no longer held", ErrLost), false)
		return fmt.Errorf("lock: refresh %q: %w", le.req.Key, err)
	default:
		le.l.opts.Metrics.refreshFailed(le.l.caps.Name)
		return &IndeterminateError{Op: "refresh", Key: le.req.Key, Err: err}
	}
}

// Release frees the key and ends the lease. It returns an error matching
// [ErrNotHeld] when the lease no longer held its key (it had expired or was
// released already); the current holder, if any, is untouched. After a
// local expiry it still asks the engine, which may not have expired it yet.
// An error matching [ErrIndeterminate] means the engine did not answer; the
// key then frees itself at the engine's expiry.
func (le *Lease) Release(ctx context.Context) error {
	le.mu.Lock()
	if le.err != nil && errors.Is(le.err, ErrReleased) {
		le.mu.Unlock()
		return fmt.Errorf("lock: release %q: %w (released before)", le.req.Key, ErrNotHeld)
	}
	stop, joined := le.stopRefresh, le.refreshDone
	le.stopRefresh = nil
	le.mu.Unlock()
	if stop != nil {
		stop()
		<-joined
	}
	err := le.l.b.Release(ctx, le.req)
	switch {
	case err == nil:
		// Also after a local expiry: the engine still had the key, and
		// this Release freed it.
		le.end(ErrReleased, true)
		return nil
	case errors.Is(err, ErrNotHeld):
		// Lost, whether or not anyone noticed before: Err says so (and
		// the metrics count it once).
		le.end(fmt.Errorf("%w: release found the key no longer held", ErrLost), false)
		return fmt.Errorf("lock: release %q: %w", le.req.Key, err)
	default:
		le.end(ErrReleased, false)
		return &IndeterminateError{Op: "release", Key: le.req.Key, Err: err}
	}
}

// end finishes the lease with err unless it has ended already; released
// replaces an earlier loss with a successful Release. It returns the
// earlier error, or nil when this call ended the lease.
func (le *Lease) end(err error, released bool) error {
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.err != nil {
		if released && !errors.Is(le.err, ErrReleased) {
			prev := le.err
			le.err = err // a lost lease that was released afterwards
			return prev
		}
		return le.err
	}
	le.err = err
	if le.timer != nil {
		le.timer.Stop()
	}
	if le.done != nil {
		close(le.done)
	} else {
		le.done = closedChan
	}
	if le.l.opts.Metrics != nil {
		le.l.opts.Metrics.held(le.l.caps.Name, time.Since(le.granted))
		le.l.opts.Metrics.permitsAdd(le.l.caps.Name, le.req, -1)
		if errors.Is(err, ErrLost) {
			le.l.opts.Metrics.leaseLost(le.l.caps.Name)
		}
	}
	return nil
}

// expire runs when the local deadline passes.
func (le *Lease) expire() {
	le.mu.Lock()
	early := time.Now().Before(le.deadline) // a Refresh moved the deadline
	le.mu.Unlock()
	if early {
		return
	}
	le.end(fmt.Errorf("%w: local deadline passed", ErrLost), false)
}

// refreshLoop refreshes the lease every TTL/3 until ctx ends or the lease
// ends.
func (le *Lease) refreshLoop(ctx context.Context) {
	defer close(le.refreshDone)
	interval := le.req.TTL / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	done := le.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		err := le.Refresh(rctx)
		cancel()
		switch {
		case err == nil:
			t.Reset(interval)
		case errors.Is(err, ErrNotHeld):
			return
		default:
			// Try again sooner; the local deadline ends the lease if the
			// engine stays unreachable.
			t.Reset(interval / 4)
		}
	}
}
