package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haita/haita/lock"
)

// semListener keeps one connection LISTENing on the semaphore tables' channel
// (a mutex Locker waits through the wait table and its own channel instead). A
// notification (payload: the key) wakes the first local waiter of that key
// in the Locker's lock.WaitQueue, which keeps the waiters' order. It starts
// on the first subscribe and reconnects with backoff until close.
type semListener struct {
	c       client
	channel string
	q       *lock.WaitQueue

	mu      sync.Mutex
	started bool
	closed  bool
	up      bool          // LISTEN is in effect on a live connection
	attempt chan struct{} // closed when the current connection attempt ends
	tried   bool          // attempt is closed
	lastErr error
	cancel  context.CancelFunc
	done    chan struct{}
}

func newSemListener(c client, channel string, q *lock.WaitQueue) *semListener {
	return &semListener{c: c, channel: channel, q: q}
}

// errNotListening is returned by subscribe while the listening connection is
// down; the Locker then polls.
var errNotListening = errors.New("pglock: not listening for releases")

// subscribe puts a waiter for req at the end of its key's queue. When it
// returns without error, LISTEN is in effect, so every release committed
// afterwards is delivered.
func (l *semListener) subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, lock.ErrClosed
	}
	if !l.started {
		l.started = true
		l.attempt = make(chan struct{})
		lctx, cancel := context.WithCancel(context.Background())
		l.cancel = cancel
		l.done = make(chan struct{})
		go l.run(lctx)
	}
	if !l.up {
		attempt := l.attempt
		l.mu.Unlock()
		select {
		case <-attempt:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		l.mu.Lock()
		if !l.up {
			err := l.lastErr
			l.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", errNotListening, err)
		}
	}
	l.mu.Unlock()
	return l.q.Join(req), nil
}

func (l *semListener) run(ctx context.Context) {
	defer close(l.done)
	const maxBackoff = 5 * time.Second
	backoff := 50 * time.Millisecond
	listen := "LISTEN " + pgx.Identifier{l.channel}.Sanitize()
	for {
		err := l.c.listen(ctx, func(conn *pgx.Conn) error {
			if _, err := conn.Exec(ctx, listen); err != nil {
				return err
			}
			l.setUp()
			backoff = 50 * time.Millisecond
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					return err
				}
				l.deliver(n.Payload)
			}
		})
		l.setDown(err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (l *semListener) setUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = true
	if !l.tried {
		l.tried = true
		close(l.attempt)
	}
	// Releases while the connection was down were missed: let the first
	// waiter of every key try again.
	l.q.WakeAll()
}

func (l *semListener) setDown(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = false
	l.lastErr = err
	if !l.tried {
		close(l.attempt)
	}
	l.attempt = make(chan struct{})
	l.tried = false
}

// deliver wakes the first waiter of key: only it asks the database.
func (l *semListener) deliver(key string) { l.q.Wake(key) }

func (l *semListener) close() {
	l.mu.Lock()
	l.closed = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
