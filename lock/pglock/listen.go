package pglock

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// listener keeps one connection LISTENing on the table's channel and on
// the Locker's own channel. A notification on the table's channel (payload:
// a key freed with nobody queued) wakes the Locker's waiters of that key; one
// on its own channel ("token owner key") hands a key to one of its waiters.
// It starts on the first wait and reconnects with backoff until close.
type listener struct {
	c       client
	channel string // the table's
	own     string // the Locker's
	ws      *waiters

	mu      sync.Mutex
	started bool
	closed  bool
	up      bool          // LISTEN is in effect on a live connection
	attempt chan struct{} // closed when the current connection attempt ends
	tried   bool          // attempt is closed
	cancel  context.CancelFunc
	done    chan struct{}
}

func newListener(c client, channel, own string, ws *waiters) *listener {
	return &listener{c: c, channel: channel, own: own, ws: ws}
}

// listening reports whether LISTEN is in effect.
func (l *listener) listening() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// start starts the listener unless it runs, and waits for its current
// connection attempt, or for ctx. Without a connection, waiters poll.
func (l *listener) start(ctx context.Context) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
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
		return
	}
	attempt := l.attempt
	l.mu.Unlock()
	select {
	case <-attempt:
	case <-ctx.Done():
	}
}

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	const maxBackoff = 5 * time.Second
	backoff := 50 * time.Millisecond
	listen := "LISTEN " + pgx.Identifier{l.channel}.Sanitize() + "; LISTEN " + pgx.Identifier{l.own}.Sanitize()
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
				if n.Channel == l.own {
					l.ws.handedPayload(n.Payload)
				} else {
					l.ws.wakeKey(n.Payload)
				}
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
	// Releases while the connection was down were missed: let every
	// waiter look again.
	l.ws.wakeKey("")
}

func (l *listener) setDown(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = false
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
