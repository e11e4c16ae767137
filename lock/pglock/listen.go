package pglock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haita/haita/lock"
)

// listener keeps one connection LISTENing on the table's channel and hands
// notifications (payload: the key) to the local subscribers of that key. It
// starts on the first subscribe and reconnects with backoff until close.
type listener struct {
	c       client
	channel string

	mu      sync.Mutex
	subs    map[string][]*subscription // per key, oldest first
	started bool
	closed  bool
	up      bool          // LISTEN is in effect on a live connection
	attempt chan struct{} // closed when the current connection attempt ends
	tried   bool          // attempt is closed
	lastErr error
	cancel  context.CancelFunc
	done    chan struct{}
}

func newListener(c client, channel string) *listener {
	return &listener{c: c, channel: channel, subs: make(map[string][]*subscription)}
}

// errNotListening is returned by subscribe while the listening connection is
// down; the Locker then polls.
var errNotListening = errors.New("pglock: not listening for releases")

// subscribe registers for releases of key. When it returns without error,
// LISTEN is in effect, so every release committed afterwards is delivered.
func (l *listener) subscribe(ctx context.Context, key string) (lock.Subscription, error) {
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
	s := &subscription{l: l, key: key, c: make(chan struct{}, 1)}
	l.subs[key] = append(l.subs[key], s)
	l.mu.Unlock()
	return s, nil
}

func (l *listener) run(ctx context.Context) {
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

func (l *listener) setUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = true
	if !l.tried {
		l.tried = true
		close(l.attempt)
	}
	// Releases while the connection was down were missed: let every waiter
	// try again.
	for _, subs := range l.subs {
		for _, s := range subs {
			s.wake()
		}
	}
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

// deliver wakes the oldest subscriber of key that has no wake-up pending:
// one release frees the key for one waiter, so waking all of them would only
// make them race for it.
func (l *listener) deliver(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.subs[key] {
		if s.wake() {
			return
		}
	}
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

type subscription struct {
	l    *listener
	key  string
	c    chan struct{}
	once sync.Once
}

// wake queues a wake-up unless one is pending; it reports whether it queued.
func (s *subscription) wake() bool {
	select {
	case s.c <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *subscription) C() <-chan struct{} { return s.c }

// Close unregisters the subscription. A wake-up it received but never
// consumed is passed on to the next subscriber of the key, so that a waiter
// giving up does not swallow a release.
func (s *subscription) Close() {
	s.once.Do(func() {
		l := s.l
		l.mu.Lock()
		defer l.mu.Unlock()
		subs := l.subs[s.key]
		if i := slices.Index(subs, s); i >= 0 {
			subs = slices.Delete(subs, i, i+1)
		}
		if len(subs) == 0 {
			delete(l.subs, s.key)
		} else {
			l.subs[s.key] = subs
		}
		select {
		case <-s.c:
			for _, o := range subs {
				if o.wake() {
					break
				}
			}
		default:
		}
	})
}
