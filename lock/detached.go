package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Detached runs the attempts of a [Backend] whose engine finishes a request
// even when its client gives up, as an SQL server finishes a statement whose
// connection the driver closed. A grant made after the Locker's cleanup
// Release would block the key for a TTL, so an attempt whose caller left
// (its context ended) keeps running in the background until the engine
// answers, for at most the request's TTL (after which a grant it made has
// expired), and a grant it made then is released. A backend runs every
// attempt through one Detached and calls [Detached.Close] from its Close.
//
// The zero value is ready to use. A Detached is safe for concurrent use.
type Detached struct {
	mu     sync.Mutex
	bg     context.Context // the background attempts' context; ends with Close
	stop   context.CancelFunc
	closed bool
	wg     sync.WaitGroup // attempts that may outlive their callers
}

// Try calls attempt for req and returns its answer, or ctx.Err() as soon as
// ctx ends. In that case attempt goes on in the background, with a context
// of its own that ends after req.TTL (never, for a zero TTL) or at Close;
// when its answer is anything but a definite "held" ([ErrNotAcquired]),
// Try's goroutine calls release(req), which must free the key if req holds
// it, with a context of its own.
//
// attempt gets a context that is not ctx: when that context's TTL runs out
// before the engine answers, Try reports an error matching [ErrLost], not
// context.DeadlineExceeded, since the caller's deadline did not pass and a
// grant, if one was made, could not be valid any more. An attempt still
// running at Close is told to stop, and Try reports an indeterminate error.
// After Close, and for a ctx that can never end, Try calls attempt with ctx
// in the caller's goroutine.
func (d *Detached) Try(ctx context.Context, req Request, attempt func(context.Context) (Grant, error), release func(Request)) (Grant, error) {
	d.mu.Lock()
	if ctx.Done() == nil || d.closed {
		d.mu.Unlock()
		return attempt(ctx)
	}
	if d.bg == nil {
		d.bg, d.stop = context.WithCancel(context.Background())
	}
	bg := d.bg
	d.wg.Add(1)
	d.mu.Unlock()
	type result struct {
		g   Grant
		err error
	}
	res := make(chan result)
	left := make(chan struct{})
	go func() {
		defer d.wg.Done()
		actx, cancel := bg, context.CancelFunc(func() {})
		if req.TTL > 0 {
			actx, cancel = context.WithTimeout(bg, req.TTL)
		}
		defer cancel()
		g, err := attempt(actx)
		if err != nil && !errors.Is(err, ErrNotAcquired) {
			switch {
			case errors.Is(actx.Err(), context.DeadlineExceeded):
				// A grant, if the engine made one, has expired or is about
				// to: a lost grant, not the caller's deadline.
				err = fmt.Errorf("lock: acquire %q: no answer within the TTL of %v: %w (%v)", req.Key, req.TTL, ErrLost, err)
			case actx.Err() != nil:
				err = fmt.Errorf("lock: acquire %q: stopped by Close: %v", req.Key, err)
			}
		}
		select {
		case res <- result{g, err}:
		case <-left:
			if !errors.Is(err, ErrNotAcquired) {
				release(req)
			}
		}
	}()
	select {
	case r := <-res:
		return r.g, r.err
	case <-ctx.Done():
		close(left)
		return Grant{}, ctx.Err()
	}
}

// Close stops the attempts running in the background and waits for them
// and for their releases. Later calls of Try run in the caller's goroutine.
func (d *Detached) Close() {
	d.mu.Lock()
	d.closed = true
	stop := d.stop
	d.mu.Unlock()
	if stop != nil {
		stop()
	}
	d.wg.Wait()
}
