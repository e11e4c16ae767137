package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// New builds a [Locker] on a backend. Backend packages call it from their
// own constructors; users call those. It returns an error matching
// [ErrInvalidOptions] for invalid opts.
func New(b Backend, opts Options) (Locker, error) {
	return newLocker(b, opts, Share{})
}

// newLocker builds a locker whose every request carries share.
func newLocker(b Backend, opts Options, share Share) (*locker, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil backend", ErrInvalidOptions)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	caps := b.Capabilities()
	if !caps.TTL && opts.TTL > 0 {
		return nil, fmt.Errorf("%w: backend %s has no TTL, but TTL is %v", ErrInvalidOptions, caps.Name, opts.TTL)
	}
	l := &locker{b: b, caps: caps, opts: opts, ttl: opts.TTL, share: share, closeBackend: true}
	if l.ttl == 0 && caps.TTL {
		l.ttl = b.DefaultTTL()
	}
	l.drift = opts.Drift
	if l.drift == 0 && l.ttl > 0 {
		l.drift = l.ttl/100 + 2*time.Millisecond
	}
	if l.ttl > 0 && l.drift >= l.ttl {
		return nil, fmt.Errorf("%w: drift %v leaves nothing of TTL %v", ErrInvalidOptions, l.drift, l.ttl)
	}
	l.poll = opts.PollInterval
	if l.poll == 0 {
		l.poll = time.Second
		if _, ok := b.(Notifier); !ok {
			l.poll = 50 * time.Millisecond
		}
	}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	return l, nil
}

type locker struct {
	b      Backend
	caps   Capabilities
	opts   Options
	ttl    time.Duration
	drift  time.Duration
	poll   time.Duration
	ctx    context.Context // cancelled by Close
	cancel context.CancelCauseFunc
	once   sync.Once
	err    error

	share        Share // sent with every request: zero for a mutex
	closeBackend bool  // Close closes b (false for the second locker of an RWLocker)

	mu      sync.Mutex
	waiting map[string]int // Acquire calls waiting, by key
}

func (l *locker) Waiting(key string) int {
	if c, ok := l.b.(WaitCounter); ok {
		return c.Waiting(key)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting[key]
}

// startWaiting counts a waiting Acquire for key and returns the function
// that stops counting it.
func (l *locker) startWaiting(key string) func() {
	l.mu.Lock()
	if l.waiting == nil {
		l.waiting = make(map[string]int)
	}
	l.waiting[key]++
	l.mu.Unlock()
	l.opts.Metrics.waitingAdd(l.caps.Name, 1)
	l.opts.Metrics.keyWaitingAdd(l.caps.Name, l.share, key, 1)
	return func() {
		l.opts.Metrics.keyWaitingAdd(l.caps.Name, l.share, key, -1)
		l.mu.Lock()
		if l.waiting[key]--; l.waiting[key] == 0 {
			delete(l.waiting, key)
		}
		l.mu.Unlock()
		l.opts.Metrics.waitingAdd(l.caps.Name, -1)
	}
}

func (l *locker) Capabilities() Capabilities { return l.caps }

func (l *locker) Close() error {
	l.once.Do(func() {
		l.cancel(ErrClosed)
		if l.closeBackend {
			l.err = l.b.Close()
		}
	})
	return l.err
}

func (l *locker) Acquire(ctx context.Context, key string) (*Lease, error) {
	return l.acquire(ctx, key, true)
}

func (l *locker) TryAcquire(ctx context.Context, key string) (*Lease, error) {
	return l.acquire(ctx, key, false)
}

func (l *locker) acquire(ctx context.Context, key string, wait bool) (*Lease, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if l.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock: acquire %q: %w", key, err)
	}
	var start time.Time
	if l.timed() {
		start = time.Now()
	}
	req := Request{Key: key, Owner: NewOwner(), Holder: l.opts.Holder, TTL: l.ttl, Share: l.share, Wait: wait}
	// The lease is built before the key is taken, so that a hot key's
	// holder does not spend its turn on an allocation.
	le := &Lease{l: l, req: req}
	g, err := l.b.Try(ctx, req)
	if err == nil {
		return l.grant(le, g, start, start)
	}
	if !errors.Is(err, ErrNotAcquired) {
		return nil, l.failed(ctx, req, err)
	}
	l.opts.Metrics.contended(l.caps.Name)
	if !wait {
		l.opts.Metrics.acquired(l.caps.Name, "not_acquired", time.Since(start))
		return nil, err
	}
	if q, ok := l.b.(Queuer); ok {
		return l.queue(ctx, q, le, start)
	}
	return l.wait(ctx, le, start, err)
}

// waitContext derives the context a waiting Acquire runs under: it ends with
// the caller's context, the wait limit (cause ErrWaitLimit) or Close (cause
// ErrClosed).
// timed reports whether leases need clock readings: for a TTL or metrics.
// Skipping them keeps the uncontended in-process path cheap.
func (l *locker) timed() bool { return l.ttl > 0 || l.opts.Metrics != nil }

func (l *locker) waitContext(ctx context.Context) (context.Context, func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.ctx, func() { cancel(ErrClosed) })
	var cancelLimit context.CancelFunc = func() {}
	if l.opts.WaitLimit > 0 {
		wctx, cancelLimit = context.WithTimeoutCause(wctx, l.opts.WaitLimit, ErrWaitLimit)
	}
	return wctx, func() { cancelLimit(); stop(); cancel(nil) }
}

// waitErr turns the end of a wait context into the error Acquire returns.
func (l *locker) waitErr(ctx, wctx context.Context, key string, start time.Time) error {
	var err error
	switch cause := context.Cause(wctx); {
	case ctx.Err() != nil:
		err = fmt.Errorf("lock: acquire %q: %w", key, ctx.Err())
		l.opts.Metrics.acquired(l.caps.Name, "cancelled", time.Since(start))
	case errors.Is(cause, ErrClosed):
		err = ErrClosed
		l.opts.Metrics.acquired(l.caps.Name, "cancelled", time.Since(start))
	default:
		err = fmt.Errorf("lock: acquire %q: waited %v: %w", key, l.opts.WaitLimit, ErrWaitLimit)
		l.opts.Metrics.acquired(l.caps.Name, "wait_limit", time.Since(start))
	}
	return err
}

func (l *locker) queue(ctx context.Context, q Queuer, le *Lease, start time.Time) (*Lease, error) {
	req := le.req
	wctx, done := l.waitContext(ctx)
	defer done()
	defer l.startWaiting(req.Key)()
	sent := time.Now()
	g, err := q.Wait(wctx, req)
	if err == nil {
		return l.grant(le, g, sent, start)
	}
	if wctx.Err() != nil {
		return nil, l.waitErr(ctx, wctx, req.Key, start)
	}
	return nil, l.failed(wctx, req, err)
}

func (l *locker) wait(ctx context.Context, le *Lease, start time.Time, last error) (*Lease, error) {
	req := le.req
	wctx, done := l.waitContext(ctx)
	defer done()
	var wake <-chan struct{}
	if n, ok := l.b.(Notifier); ok {
		sub, err := n.Subscribe(wctx, req)
		if err == nil {
			defer sub.Close()
			wake = sub.C()
		} else if wctx.Err() != nil {
			return nil, l.waitErr(ctx, wctx, req.Key, start)
		}
		// Without a subscription the poll below still finds the key free.
	}
	defer l.startWaiting(req.Key)()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	// With a subscription in effect a release from now on wakes us, so try
	// at once in case the key was freed before it took effect.
	tryNow := wake != nil
	for {
		if tryNow {
			sent := time.Now()
			g, err := l.b.Try(wctx, req)
			if err == nil {
				return l.grant(le, g, sent, start)
			}
			if wctx.Err() != nil {
				l.cleanup(req)
				return nil, l.waitErr(ctx, wctx, req.Key, start)
			}
			if !errors.Is(err, ErrNotAcquired) {
				return nil, l.failed(wctx, req, err)
			}
			last = err
		}
		tryNow = true
		d := l.poll/2 + rand.N(l.poll/2+1)
		var held *HeldError
		if errors.As(last, &held) && !held.ExpiresAt.IsZero() {
			if until := time.Until(held.ExpiresAt) + time.Millisecond; until < d {
				d = max(until, time.Millisecond)
			}
		}
		timer.Reset(d)
		select {
		case _, ok := <-wake:
			if !ok {
				wake = nil // subscription broken: the poll takes over
			}
		case <-timer.C:
		case <-wctx.Done():
			return nil, l.waitErr(ctx, wctx, req.Key, start)
		}
	}
}

// failed handles an error from Try (or Wait) under ctx that is not a
// definite "held": the engine may have granted the key, so release it before
// reporting. While ctx is alive the error must not match the context
// errors, or a caller checking its own deadline would blame it: a timeout of
// the backend's own is reported without them.
func (l *locker) failed(ctx context.Context, req Request, err error) error {
	if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = opaqueError{err}
	}
	if errors.Is(err, ErrInvalidKey) || errors.Is(err, ErrInvalidOptions) || errors.Is(err, ErrClosed) || errors.Is(err, ErrLimitMismatch) {
		return err
	}
	l.cleanup(req)
	l.opts.Metrics.acquired(l.caps.Name, "error", 0)
	if errors.Is(err, ErrLost) {
		// The backend knows it was not granted (a waiter's own engine
		// lease ended while it waited): say so rather than "unknown".
		return fmt.Errorf("lock: acquire %q: %w", req.Key, err)
	}
	return &IndeterminateError{Op: "acquire", Key: req.Key, Err: err}
}

// cleanup releases a grant that may have happened, with a fresh context:
// the caller's may be the reason the outcome is unknown.
func (l *locker) cleanup(req Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.b.Release(ctx, req)
}

// grant completes le, built before its request was sent, with a Backend's
// grant. A grant that arrives after its own local deadline (a slow answer, a
// quorum that took too long) is worthless: the engine may have expired it
// already, so it is given back and reported as lost rather than handed out.
func (l *locker) grant(le *Lease, g Grant, sent, start time.Time) (*Lease, error) {
	req := le.req
	le.token = g.Token
	var deadline time.Time
	if req.TTL > 0 {
		validity := g.Validity
		if validity == 0 {
			validity = req.TTL
		}
		deadline = sent.Add(validity - l.drift)
		if late := time.Since(deadline); late >= 0 {
			l.cleanup(req)
			l.opts.Metrics.acquired(l.caps.Name, "error", time.Since(start))
			return nil, fmt.Errorf("lock: acquire %q: granted %v after its local deadline: %w", req.Key, late, ErrLost)
		}
	}
	l.opts.Metrics.permitsAdd(l.caps.Name, req, 1)
	if l.timed() {
		le.granted = time.Now()
		l.opts.Metrics.acquired(l.caps.Name, "acquired", le.granted.Sub(start))
	}
	if req.TTL > 0 {
		le.mu.Lock()
		le.deadline = deadline
		if l.opts.Metrics != nil {
			le.arm() // a lost lease is counted when it is lost
		}
		if l.opts.AutoRefresh {
			var ctx context.Context
			ctx, le.stopRefresh = context.WithCancel(context.Background())
			le.refreshDone = make(chan struct{})
			go le.refreshLoop(ctx)
		}
		le.mu.Unlock()
	}
	return le, nil
}

// opaqueError carries an error but does not match the context errors: it
// hides context errors that are not the caller's. errors.Is finds every
// other sentinel in it, and errors.As every typed error.
type opaqueError struct{ err error }

func (e opaqueError) As(target any) bool { return errors.As(e.err, target) }

func (e opaqueError) Error() string { return e.err.Error() }

func (e opaqueError) Is(target error) bool {
	return target != context.Canceled && target != context.DeadlineExceeded && errors.Is(e.err, target)
}
