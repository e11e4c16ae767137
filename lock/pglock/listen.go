package pglock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haita/haita/lock"
)

// listener keeps one connection LISTENing on a Locker's channels and hands
// every notification to deliver. A mutex Locker listens on its table's
// channel and on a channel of its own; a semaphore Locker on its tables'
// channel. Each time LISTEN takes effect it calls resync, because the
// notifications sent while the connection was down were missed. It starts
// on the first wait and reconnects with backoff until close.
type listener struct {
	c        client
	channels []string
	deliver  func(channel, payload string)
	resync   func()

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

// newListener returns a listener on channels. deliver and resync are called
// on the listener's goroutine; resync with the listener's lock held.
func newListener(c client, channels []string, deliver func(channel, payload string), resync func()) *listener {
	return &listener{c: c, channels: channels, deliver: deliver, resync: resync}
}

// errNotListening is returned by start while the listening connection is
// down; waiters then poll.
var errNotListening = errors.New("pglock: not listening for releases")

// listening reports whether LISTEN is in effect.
func (l *listener) listening() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// start starts the listener unless it runs, and waits for its current
// connection attempt, or for ctx. It returns nil when LISTEN is in effect,
// so that every notification committed afterwards is delivered;
// lock.ErrClosed after close; ctx.Err(); or errNotListening with the
// connection's error when the attempt failed. Without a connection, waiters
// poll.
func (l *listener) start(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return lock.ErrClosed
	}
	if !l.started {
		l.started = true
		l.attempt = make(chan struct{})
		lctx, cancel := context.WithCancel(context.Background())
		l.cancel = cancel
		l.done = make(chan struct{})
		go l.run(lctx)
	}
	if l.up {
		l.mu.Unlock()
		return nil
	}
	attempt := l.attempt
	l.mu.Unlock()
	select {
	case <-attempt:
	case <-ctx.Done():
		return ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		return fmt.Errorf("%w: %w", errNotListening, l.lastErr)
	}
	return nil
}

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	const maxBackoff = 5 * time.Second
	backoff := 50 * time.Millisecond
	stmts := make([]string, len(l.channels))
	for i, ch := range l.channels {
		stmts[i] = "LISTEN " + pgx.Identifier{ch}.Sanitize()
	}
	listen := strings.Join(stmts, "; ")
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
				l.deliver(n.Channel, n.Payload)
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

func (l *listener) setUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = true
	if !l.tried {
		l.tried = true
		close(l.attempt)
	}
	l.resync()
}

func (l *listener) setDown(err error) {
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

func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
