package singleton

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/haita/haita/lock"
)

// Mode says what a runner does when another node runs the job.
type Mode int

const (
	// Skip returns a *[RunningError] at once, naming the node that runs
	// the job. The zero value.
	Skip Mode = iota
	// Wait waits for the lease (until ctx ends or the Locker's wait limit
	// passes) and then runs the job, or, for a slot another node already
	// completed, returns a *[DoneError].
	Wait
)

// Options configure a [Runner]. The zero value is valid: Skip mode, no
// slot markers.
type Options struct {
	// Mode selects skipping or waiting when the job runs elsewhere.
	Mode Mode
	// Markers keeps the durable per-(job, slot) markers that
	// [Runner.RunSlot] needs; nil makes RunSlot return [ErrNoMarkers].
	// Use a *[SQLMarkers].
	Markers Markers
	// Holder names this node in markers ("api-3/pid 812"). Zero selects
	// "hostname/pid N". Others see the lock's holder name (the Locker's
	// lock.Options.Holder) in a RunningError.
	Holder string
	// KeyPrefix is prepended to a job name to form its lock key. Zero
	// selects "singleton/".
	KeyPrefix string
	// Now is the clock for the times markers record. Nil: time.Now.
	Now func() time.Time
}

// Sentinel errors. Match them with errors.Is.
var (
	// ErrRunning is matched by a *[RunningError]: in Skip mode, another
	// node holds the job's lease.
	ErrRunning = errors.New("singleton: job is running on another node")
	// ErrDone is matched by a *[DoneError]: the slot's run already
	// completed (done or failed).
	ErrDone = errors.New("singleton: slot already ran")
	// ErrNoMarkers is returned by RunSlot when Options.Markers is nil.
	ErrNoMarkers = errors.New("singleton: RunSlot needs Options.Markers")
	// ErrInvalid is returned for an empty or oversized job or slot name
	// and by constructors for invalid options.
	ErrInvalid = errors.New("singleton: invalid argument")
	// ErrSuperseded is returned when a later lease holder took the slot
	// over (this node's lease was lost): the outcome was not recorded.
	ErrSuperseded = errors.New("singleton: slot taken over by a later holder")
)

// RunningError reports that another node runs the job. It matches
// [ErrRunning].
type RunningError struct {
	Job    string
	Holder string    // the lock holder's name, where the backend stores it
	Until  time.Time // its lease's expiry as seen here; zero when unknown
}

func (e *RunningError) Error() string {
	s := fmt.Sprintf("singleton: job %q is running", e.Job)
	if e.Holder != "" {
		s += " on " + e.Holder
	}
	if !e.Until.IsZero() {
		s += " until " + e.Until.UTC().Format(time.RFC3339)
	}
	return s
}

// Is makes a RunningError match ErrRunning.
func (e *RunningError) Is(target error) bool { return target == ErrRunning }

// DoneError reports that a slot's run already completed. It matches
// [ErrDone].
type DoneError struct {
	Job, Slot string
	State     State     // StateDone or StateFailed
	By        string    // the Holder that ran it
	At        time.Time // when it finished
	Err       string    // the failed run's error text
}

func (e *DoneError) Error() string {
	s := fmt.Sprintf("singleton: job %q slot %q already %s by %s at %s", e.Job, e.Slot, e.State, e.By, e.At.UTC().Format(time.RFC3339))
	if e.Err != "" {
		s += ": " + e.Err
	}
	return s
}

// Is makes a DoneError match ErrDone.
func (e *DoneError) Is(target error) bool { return target == ErrDone }

// Runner runs jobs on at most one node at a time over a lock.Locker. It is
// safe for concurrent use by multiple goroutines; its zero value is not
// usable: call [New]. A Runner has no background work of its own outside
// Run and RunSlot calls; the caller closes the Locker.
type Runner struct {
	l    lock.Locker
	opts Options
}

// New returns a Runner on l. It returns an error matching [ErrInvalid] for
// a nil Locker or an invalid Mode.
func New(l lock.Locker, opts Options) (*Runner, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil locker", ErrInvalid)
	}
	if opts.Mode != Skip && opts.Mode != Wait {
		return nil, fmt.Errorf("%w: mode %d", ErrInvalid, opts.Mode)
	}
	if opts.Holder == "" {
		host, _ := os.Hostname()
		opts.Holder = fmt.Sprintf("%s/pid %d", host, os.Getpid())
	}
	if len(opts.Holder) > 256 || !utf8.ValidString(opts.Holder) {
		return nil, fmt.Errorf("%w: Holder must be valid UTF-8 of at most 256 bytes", ErrInvalid)
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "singleton/"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Runner{l: l, opts: opts}, nil
}

// Run runs fn while holding the job's lease: no two nodes sharing the
// lock backend run job at the same time ("no overlap"). It does not stop
// the job from running again right after, on this node or another; use
// [Runner.RunSlot] for that.
//
// fn's context is cancelled when ctx ends or the lease is lost (its cause
// is then lock.ErrLost): fn must stop then, because another node may take
// over. While fn runs the Runner refreshes the lease at a third of its
// remaining time (also when the Locker has no AutoRefresh).
//
// In Skip mode a held lease returns a *[RunningError] without running fn;
// in Wait mode Run waits for it. Run returns fn's error, wrapped with
// lock.ErrLost when the lease was lost while fn ran.
func (r *Runner) Run(ctx context.Context, job string, fn func(ctx context.Context) error) error {
	if err := check("job", job, 200); err != nil {
		return err
	}
	ru, err := r.begin(ctx, job, "")
	if err != nil {
		return err
	}
	return ru.runAndEnd(ctx, fn)
}

// RunSlot runs fn at most once for (job, slot) across all nodes sharing
// the Locker and the Markers ("once per slot"). slot names the scheduled
// occurrence, for example [Slot](scheduledTime, time.Minute): two nodes
// whose clocks differ by a few seconds compute the same slot and the second
// finds it done ([DoneError]) instead of running the 01:00 job again.
//
// Under the lease it claims the slot's marker (state "started"), runs fn as
// [Runner.Run] does, and records "done" or "failed" with fn's error text.
// A completed slot, done or failed, never runs again. A slot left
// "started" by a runner that died (or lost its lease) before recording the
// outcome is run again by the next lease holder, after the dead runner's
// lease expired: the slot's run may then have happened twice if the first
// runner died after its effects but before recording them. Make fn
// idempotent or fence its writes with the lease's token (the marker's
// attempt count tells a re-run).
func (r *Runner) RunSlot(ctx context.Context, job, slot string, fn func(ctx context.Context) error) error {
	if err := check("job", job, 200); err != nil {
		return err
	}
	if err := check("slot", slot, 100); err != nil {
		return err
	}
	if r.opts.Markers == nil {
		return ErrNoMarkers
	}
	ru, err := r.begin(ctx, job, slot)
	if err != nil {
		return err
	}
	return ru.runAndEnd(ctx, fn)
}

// Slot returns the name of the schedule slot nearest t for a job that
// runs every d: t rounded to a multiple of d (in UTC, counted from the Unix
// epoch), formatted as RFC 3339. Rounding to the nearest, not down, keeps
// two nodes whose clocks differ by less than d/2 in the same slot.
func Slot(t time.Time, d time.Duration) string {
	if d <= 0 {
		return t.UTC().Format(time.RFC3339Nano)
	}
	return t.Round(d).UTC().Format(time.RFC3339Nano)
}

func check(what, v string, max int) error {
	if v == "" || len(v) > max || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%w: %s must be non-empty valid UTF-8 without NUL of at most %d bytes", ErrInvalid, what, max)
	}
	return nil
}

// execution is one claimed run: the lease, and the marker when slotted.
type execution struct {
	r         *Runner
	job, slot string
	lease     *lock.Lease
	mark      Mark
}

// begin takes the lease and, for a slot, claims its marker.
func (r *Runner) begin(ctx context.Context, job, slot string) (*execution, error) {
	key := r.opts.KeyPrefix + job
	var le *lock.Lease
	var err error
	if r.opts.Mode == Wait {
		le, err = r.l.Acquire(ctx, key)
	} else {
		le, err = r.l.TryAcquire(ctx, key)
	}
	var he *lock.HeldError
	if errors.As(err, &he) {
		return nil, &RunningError{Job: job, Holder: he.Holder, Until: he.ExpiresAt}
	}
	if err != nil {
		return nil, fmt.Errorf("singleton: %s: %w", job, err)
	}
	ru := &execution{r: r, job: job, slot: slot, lease: le}
	if slot == "" {
		return ru, nil
	}
	ru.mark = Mark{Job: job, Slot: slot, Holder: r.opts.Holder, RunID: newRunID(), Fence: uint64(le.Token()), At: r.opts.Now()}
	if _, err := r.opts.Markers.Begin(ctx, ru.mark); err != nil {
		ru.release()
		return nil, err
	}
	return ru, nil
}

// runAndEnd runs fn and records its outcome. If fn panics the lease is
// released, the slot stays started (as if the process had died) and the
// panic goes on.
func (ru *execution) runAndEnd(ctx context.Context, fn func(ctx context.Context) error) error {
	ended := false
	defer func() {
		if !ended {
			ru.release()
		}
	}()
	err := ru.run(ctx, fn)
	ended = true
	return ru.end(err)
}

// run runs fn under the lease's context while refreshing the lease.
func (ru *execution) run(ctx context.Context, fn func(ctx context.Context) error) error {
	lctx, cancel := ru.lease.Context(ctx)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { ru.refresh(stop) })
	err := fn(lctx)
	close(stop)
	wg.Wait()
	if lerr := ru.lease.Err(); lerr != nil {
		return errors.Join(err, fmt.Errorf("singleton: %s: lease lost while running: %w", ru.job, lerr))
	}
	return err
}

// refresh extends the lease at a third of its remaining time until stop
// closes or the lease ends.
func (ru *execution) refresh(stop <-chan struct{}) {
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		exp := ru.lease.Expiry()
		if exp.IsZero() {
			return
		}
		t.Reset(max(time.Until(exp)/3, time.Millisecond))
		select {
		case <-stop:
			return
		case <-ru.lease.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Until(exp), time.Millisecond))
		_ = ru.lease.Refresh(ctx) // a failure ends the lease by its deadline or at once
		cancel()
	}
}

// end records the outcome for a slot and releases the lease.
func (ru *execution) end(runErr error) error {
	defer ru.release()
	if ru.slot == "" {
		return runErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := ru.mark
	m.At = ru.r.opts.Now()
	if err := ru.r.opts.Markers.Finish(ctx, m, runErr); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

func (ru *execution) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = ru.lease.Release(ctx) // ErrNotHeld after a loss: nothing to give back
}

func newRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
