package idempotency

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
	"unicode/utf8"
)

// Errors returned by this package. Match them with [errors.Is]; the typed
// errors below carry the facts.
var (
	// ErrInFlight is returned by [Runner.Do] when another execution with the
	// same key holds the claim. It is matched by an [*InFlightError].
	ErrInFlight = errors.New("idempotency: operation in flight")
	// ErrMismatch is returned when the key was first used with a different
	// fingerprint (a different request). It is matched by a [*MismatchError].
	ErrMismatch = errors.New("idempotency: key reused with a different fingerprint")
	// ErrLeaseLost means the claim ended before the operation's outcome was
	// stored: the lease expired and another execution took the key over, or
	// it could not be extended in time. The outcome was not stored. It is
	// matched by a [*LeaseLostError]; stores return it bare from
	// [Store.Extend], [Store.Complete] and [Store.Release].
	ErrLeaseLost = errors.New("idempotency: claim lost")
	// ErrInvalidKey is returned for an empty key, a key longer than
	// [MaxKeyLen] bytes or one that is not valid UTF-8 or holds a NUL byte;
	// the same limits apply to fingerprints (which may be empty). Nothing is
	// changed.
	ErrInvalidKey = errors.New("idempotency: invalid key")
	// ErrInvalidOptions is returned by constructors given invalid options.
	ErrInvalidOptions = errors.New("idempotency: invalid options")
)

// MaxKeyLen is the longest key or fingerprint, in bytes.
const MaxKeyLen = 255

// InFlightError reports that another execution holds the key. It matches
// [ErrInFlight].
type InFlightError struct {
	Key string
	// Token is the fencing token of the execution in flight.
	Token uint64
	// RetryAfter is how long its lease has left, by the store's clock; zero
	// if the store does not tell.
	RetryAfter time.Duration
}

// Error returns a message that names the key and the token in flight.
func (e *InFlightError) Error() string {
	return fmt.Sprintf("idempotency: operation with key %q in flight (token %d)", e.Key, e.Token)
}

// Is reports whether target is [ErrInFlight].
func (e *InFlightError) Is(target error) bool { return target == ErrInFlight }

// MismatchError reports a key reused with a different fingerprint. It matches
// [ErrMismatch].
type MismatchError struct {
	Key string
	// Stored is the fingerprint the key was first used with.
	Stored string
	// Given is the fingerprint of this call.
	Given string
}

// Error returns a message that names the key and both fingerprints.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("idempotency: key %q was used with fingerprint %q, not %q", e.Key, e.Stored, e.Given)
}

// Is reports whether target is [ErrMismatch].
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// LeaseLostError reports an execution whose claim ended before its outcome
// was stored. It matches [ErrLeaseLost]. The operation ran (its side effects
// may have happened); its outcome was not stored. Side effects the operation
// writes with [Claim.Token] as a fencing token are rejected once a newer
// execution wrote.
type LeaseLostError struct {
	Key   string
	Token uint64
	// Err is the operation's own error, if it returned one.
	Err error
}

// Error returns a message that names the key and the lost token.
func (e *LeaseLostError) Error() string {
	msg := fmt.Sprintf("idempotency: claim on key %q with token %d lost; outcome not stored", e.Key, e.Token)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is reports whether target is [ErrLeaseLost].
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }

// Unwrap returns the operation's error, if any.
func (e *LeaseLostError) Unwrap() error { return e.Err }

// Claim identifies one execution of an operation.
type Claim struct {
	// Key is the idempotency key.
	Key string
	// Token is the claim's fencing token: strictly greater for every later
	// execution with the same key while the key's record exists. An
	// operation can pass it to a fenced write (sqlcc.FencedUpdate) so that a
	// resumed stale execution cannot overwrite a newer one's effects.
	Token uint64
}

// Func is the operation [Runner.Do] runs at most once per key. Its context
// is cancelled, with cause [ErrLeaseLost], when the claim is about to expire
// without having been extended (the process stalled or the store is
// unreachable); an operation should stop then. A nil error stores value as
// the key's outcome; an error stores nothing and releases the key at once, so
// the next caller runs the operation again.
type Func func(ctx context.Context, c Claim) (value []byte, err error)

// Result is the outcome of [Runner.Do].
type Result struct {
	// Value is the operation's value, from this execution or the stored one.
	Value []byte
	// Replayed is true when Value is the stored outcome of an earlier
	// execution and the operation did not run in this call.
	Replayed bool
	// Token is the fencing token of the execution that produced Value, when
	// the store knows it.
	Token uint64
}

// Options configures a [Runner]. The zero value is valid.
type Options struct {
	// Lease is the claim's time to live: how long after a caller's last
	// extension another caller may take the key over. The claim is extended
	// every Lease/3 while the operation runs. Zero: 30s. Must be at least
	// 10ms.
	Lease time.Duration
	// Retention is how long a completed outcome is kept (and replayed).
	// Zero: 24h.
	Retention time.Duration
	// PollInterval is how often [Runner.DoWait] asks the store again while
	// another execution is in flight; each wait is jittered by ±25%.
	// Zero: 50ms.
	PollInterval time.Duration
}

// Runner runs operations at most once per key. Create it with [New]; it is
// safe for concurrent use and holds no goroutine between calls.
type Runner struct {
	store     Store
	lease     time.Duration
	drift     time.Duration
	retention time.Duration
	poll      time.Duration
}

// New returns a Runner over store. Negative durations or a Lease under 10ms
// are [ErrInvalidOptions].
func New(store Store, opts Options) (*Runner, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidOptions)
	}
	r := &Runner{store: store, lease: opts.Lease, retention: opts.Retention, poll: opts.PollInterval}
	switch {
	case opts.Lease < 0, opts.Retention < 0, opts.PollInterval < 0:
		return nil, fmt.Errorf("%w: negative duration in %+v", ErrInvalidOptions, opts)
	case opts.Lease > 0 && opts.Lease < 10*time.Millisecond:
		return nil, fmt.Errorf("%w: Lease %v is under 10ms", ErrInvalidOptions, opts.Lease)
	}
	if r.lease == 0 {
		r.lease = 30 * time.Second
	}
	if r.retention == 0 {
		r.retention = 24 * time.Hour
	}
	if r.poll == 0 {
		r.poll = 50 * time.Millisecond
	}
	// The local deadline ends this much before the store's: clock rate
	// differences and the time a reply takes to be read.
	r.drift = r.lease/100 + 2*time.Millisecond
	return r, nil
}

// Do runs fn unless an execution with key has already completed or is in
// flight. On the first call with key (or after an earlier claim expired or
// was released), Do claims the key, runs fn and stores its value; it returns
// the value with Replayed false. A later call returns the stored value with
// Replayed true and does not run fn. A call while another execution holds the
// claim returns an [*InFlightError] at once. A call with a fingerprint other
// than the one the key was first used with returns a [*MismatchError].
//
// If fn returns an error, Do releases the claim and returns fn's error
// unchanged. If the claim was lost before the value could be stored, Do
// returns a [*LeaseLostError]. If ctx ends while fn runs, fn's context ends
// too, but the claim is kept until fn returns, and a value fn still returns
// is stored. A claim request, once sent, is not cut short by ctx (it is
// bounded by the lease), so that a granted claim is never left unused. Store
// errors are returned wrapped; after a store error whose outcome is unknown
// (a connection lost mid-request) the key may stay claimed until the lease
// expires.
func (r *Runner) Do(ctx context.Context, key, fingerprint string, fn Func) (Result, error) {
	return r.do(ctx, key, fingerprint, false, fn)
}

// DoWait is [Runner.Do], except that while another execution holds the claim
// it waits, polling the store, until that execution stores its outcome
// (returned as a replay), releases or loses the claim (then DoWait claims the
// key and runs fn), or ctx ends (ctx.Err()).
func (r *Runner) DoWait(ctx context.Context, key, fingerprint string, fn Func) (Result, error) {
	return r.do(ctx, key, fingerprint, true, fn)
}

func (r *Runner) do(ctx context.Context, key, fingerprint string, wait bool, fn Func) (Result, error) {
	if err := validKey("key", key, false); err != nil {
		return Result{}, err
	}
	if err := validKey("fingerprint", fingerprint, true); err != nil {
		return Result{}, err
	}
	owner := newOwner()
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		start := time.Now()
		// A claim cut short by ctx might be granted without this caller
		// knowing, which would block the key until the lease expires: the
		// claim runs to its end (bounded by the lease) once sent.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.lease)
		rec, err := r.store.Claim(cctx, ClaimRequest{Key: key, Fingerprint: fingerprint, Owner: owner, Lease: r.lease, Retention: r.retention})
		cancel()
		if err != nil {
			return Result{}, fmt.Errorf("idempotency: claim %q: %w", key, err)
		}
		if rec.State != Claimed && rec.Fingerprint != fingerprint {
			return Result{}, &MismatchError{Key: key, Stored: rec.Fingerprint, Given: fingerprint}
		}
		switch rec.State {
		case Done:
			return Result{Value: rec.Value, Replayed: true, Token: rec.Token}, nil
		case Claimed:
			return r.run(ctx, key, owner, rec.Token, start, fn)
		case InFlight:
			if !wait {
				return Result{}, &InFlightError{Key: key, Token: rec.Token, RetryAfter: rec.RetryAfter}
			}
			d := r.poll
			if rec.RetryAfter > 0 && rec.RetryAfter < d {
				d = rec.RetryAfter + time.Millisecond
			}
			d = d*3/4 + rand.N(d/2+1)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return Result{}, ctx.Err()
			case <-t.C:
			}
		default:
			return Result{}, fmt.Errorf("idempotency: claim %q: store answered unknown state %d", key, rec.State)
		}
	}
}

// run executes fn under the claim (key, owner, token) granted by a request
// sent at start, extending the lease while fn runs.
func (r *Runner) run(ctx context.Context, key, owner string, token uint64, start time.Time, fn Func) (Result, error) {
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The lease is kept while fn runs, even after ctx ends: fn may still
	// be finishing its work.
	kctx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.keep(kctx, cancel, key, owner, token, start)
	}()
	// The outcome is written even if ctx has ended: the operation ran.
	writeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), r.lease)
	}
	defer func() {
		if p := recover(); p != nil {
			// A panicking fn stored nothing: stop extending its claim and
			// free the key for the next caller, then panic on.
			stopKeeper()
			<-done
			wctx, wcancel := writeCtx()
			_ = r.store.Release(wctx, key, owner, token)
			wcancel()
			panic(p)
		}
	}()
	value, ferr := fn(fctx, Claim{Key: key, Token: token})
	stopKeeper()
	<-done
	wctx, wcancel := writeCtx()
	defer wcancel()
	if ferr != nil {
		err := r.store.Release(wctx, key, owner, token)
		if errors.Is(err, ErrLeaseLost) {
			return Result{}, &LeaseLostError{Key: key, Token: token, Err: ferr}
		}
		// A release that failed otherwise only delays the next caller
		// until the lease expires.
		return Result{}, ferr
	}
	if value == nil {
		value = []byte{}
	}
	switch err := r.store.Complete(wctx, key, owner, token, value, r.retention); {
	case errors.Is(err, ErrLeaseLost):
		return Result{}, &LeaseLostError{Key: key, Token: token}
	case err != nil:
		return Result{}, fmt.Errorf("idempotency: store outcome of %q: %w", key, err)
	}
	return Result{Value: value, Token: token}, nil
}

// keep extends the claim every lease/3 until ctx ends. When the claim is
// lost, or its local deadline passes without a successful extension, it
// cancels the operation's context with cause ErrLeaseLost.
func (r *Runner) keep(ctx context.Context, cancel context.CancelCauseFunc, key, owner string, token uint64, start time.Time) {
	lost := &LeaseLostError{Key: key, Token: token}
	deadline := time.NewTimer(time.Until(start.Add(r.lease - r.drift)))
	defer deadline.Stop()
	tick := time.NewTimer(r.lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			cancel(lost)
			return
		case <-tick.C:
			sent := time.Now()
			err := r.store.Extend(ctx, key, owner, token, r.lease)
			switch {
			case errors.Is(err, ErrLeaseLost):
				cancel(lost)
				return
			case err == nil:
				deadline.Reset(time.Until(sent.Add(r.lease - r.drift)))
			}
			tick.Reset(r.lease / 3)
		}
	}
}

func validKey(what, s string, emptyOK bool) error {
	switch {
	case s == "" && !emptyOK:
		return fmt.Errorf("%w: empty %s", ErrInvalidKey, what)
	case len(s) > MaxKeyLen:
		return fmt.Errorf("%w: %s is %d bytes, over %d", ErrInvalidKey, what, len(s), MaxKeyLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidKey, what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%w: %s holds a NUL byte", ErrInvalidKey, what)
		}
	}
	return nil
}

// newOwner returns a random 128-bit owner value in hex.
func newOwner() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
