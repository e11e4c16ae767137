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

// listener keeps one connection LISTENing on the table's channel and, per
// key, the Locker's local waiters in the order they started waiting (see
// queue.go for how they take turns). A notification (payload: the key) wakes
// the first waiter of that key. It starts on the first subscribe and
// reconnects with backoff until close.
type listener struct {
	c       client
	channel string

	// releaseOrphan frees a key handed to a waiter that left.
	releaseOrphan func(lock.Request)

	mu      sync.Mutex
	keys    map[string]*queue
	started bool
	closed  bool
	up      bool          // LISTEN is in effect on a live connection
	attempt chan struct{} // closed when the current connection attempt ends
	tried   bool          // attempt is closed
	lastErr error
	cancel  context.CancelFunc
	done    chan struct{}
}

// queue is the local waiters of one key.
type queue struct {
	key      string
	waiters  []*subscription // oldest first; waiters[0] is the head
	handoffs int             // consecutive local handoffs
}

func newListener(c client, channel string, releaseOrphan func(lock.Request)) *listener {
	return &listener{c: c, channel: channel, releaseOrphan: releaseOrphan, keys: make(map[string]*queue)}
}

// errNotListening is returned by subscribe while the listening connection is
// down; the Locker then polls.
var errNotListening = errors.New("pglock: not listening for releases")

// subscribe puts a waiter for key at the end of its queue. When it returns
// without error, LISTEN is in effect, so every release committed afterwards
// is delivered. The waiter is known by ctx, which the Locker passes to Try as
// well while it waits.
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
	q := l.keys[key]
	if q == nil {
		q = &queue{key: key}
		l.keys[key] = q
	}
	s := &subscription{l: l, q: q, ctx: ctx, c: make(chan struct{}, 1)}
	q.waiters = append(q.waiters, s)
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
	// Releases while the connection was down were missed: let the first
	// waiter of every key try again.
	for _, q := range l.keys {
		q.waiters[0].wake()
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

// deliver wakes the first waiter of key: only it asks the database, so
// waking the others would only cost them a turn of their loop.
func (l *listener) deliver(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if q := l.keys[key]; q != nil {
		q.handoffs = 0
		q.waiters[0].wake()
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

// remove takes s out of its queue. When s was the head and leaves without
// the key, the new head is woken to ask the database; when s took the key,
// its release hands the key on, so the new head sleeps. l.mu is held.
func (l *listener) remove(s *subscription) {
	q := s.q
	i := slices.Index(q.waiters, s)
	if i < 0 {
		return
	}
	q.waiters = slices.Delete(q.waiters, i, i+1)
	switch {
	case len(q.waiters) == 0:
		delete(l.keys, q.key)
	case i == 0 && !s.took:
		q.waiters[0].wake()
	}
}

// subscription is one local waiter for a key. Its fields other than l, q,
// ctx and c are guarded by l.mu.
type subscription struct {
	l   *listener
	q   *queue
	ctx context.Context
	c   chan struct{} // wake-ups, buffered

	known   bool         // req is set: the waiter has called Try
	req     lock.Request // its request
	handing bool         // a release is handing the key to it
	grant   *lock.Grant  // handed over, not yet taken by Try
	sent    time.Time    // when the handing release was sent
	took    bool         // Try granted it the key
	closed  bool
}

// wake queues a wake-up unless one is pending.
func (s *subscription) wake() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

func (s *subscription) C() <-chan struct{} { return s.c }

// Close takes the waiter out of its key's queue. A key handed to it and not
// taken is released again.
func (s *subscription) Close() {
	l := s.l
	l.mu.Lock()
	if s.closed {
		l.mu.Unlock()
		return
	}
	s.closed = true
	orphan, req := s.grant, s.req
	s.grant = nil
	l.remove(s)
	l.mu.Unlock()
	if orphan != nil {
		l.releaseOrphan(req)
	}
}
