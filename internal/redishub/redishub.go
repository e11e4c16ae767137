// Package redishub holds what the lock backends on Redis need to share one
// pub/sub connection among a Locker's waiters: the connection, opened by its
// first SUBSCRIBE and read by a goroutine that Close waits for; the count of
// a channel's SUBSCRIBE commands and of Redis's confirmations, which tells a
// waiter when it can no longer miss a message and tells the reader when
// go-redis resubscribed after a reconnect; and the timers that keep a
// channel nobody waits on subscribed a little longer.
//
// None of its types locks: each is used under its hub's lock.
package redishub

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Subscriber is the client a Conn opens its connection on.
type Subscriber interface {
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

// Conn is a pub/sub connection shared by a hub's channels. It is opened by
// the first Subscribe, which starts the hub's reader on a goroutine; Close
// closes it and waits for that goroutine. Calls must be serialised by the
// caller. A constructor is required.
type Conn struct {
	c    Subscriber
	read func(*redis.PubSub)
	ps   *redis.PubSub // nil until the first subscription
	done chan struct{} // closed when read returns
}

// NewConn returns a Conn that opens its connection on c and reads it with
// read, which must return once the connection is closed.
func NewConn(c Subscriber, read func(*redis.PubSub)) *Conn {
	return &Conn{c: c, read: read}
}

// Open reports whether a Subscribe opened the connection.
func (c *Conn) Open() bool { return c.ps != nil }

// Subscribe sends SUBSCRIBE for channels. The first call opens the
// connection and starts the reader once Redis took the command; when that
// first SUBSCRIBE fails, the connection is closed again and the next call
// opens a new one.
func (c *Conn) Subscribe(ctx context.Context, channels ...string) error {
	if c.ps != nil {
		return c.ps.Subscribe(ctx, channels...)
	}
	ps := c.c.Subscribe(ctx)
	if err := ps.Subscribe(ctx, channels...); err != nil {
		_ = ps.Close()
		return err
	}
	c.ps = ps
	done := make(chan struct{})
	c.done = done
	go func() {
		defer close(done)
		c.read(ps)
	}()
	return nil
}

// Unsubscribe sends UNSUBSCRIBE for channels; it does nothing while the
// connection is not open.
func (c *Conn) Unsubscribe(ctx context.Context, channels ...string) error {
	if c.ps == nil {
		return nil
	}
	return c.ps.Unsubscribe(ctx, channels...)
}

// Close closes the connection, if it is open, and waits for the reader to
// return. It is called once. The caller must send nothing more: a hub marks itself closed
// first, under its lock, and calls Close after letting go of the lock, which
// the reader takes.
func (c *Conn) Close() error {
	if c.ps == nil {
		return nil
	}
	err := c.ps.Close()
	<-c.done
	return err
}

// Confirmations counts the SUBSCRIBE commands sent for a channel (or for a
// group of channels that are always subscribed together, counted by the
// last one's confirmation) and Redis's confirmations of them, which come in
// order. A waiter that waits until they match can no longer miss a message.
// A confirmation beyond the count is go-redis resubscribing after a
// reconnect, when messages may have been lost. The zero value is a channel
// never subscribed.
type Confirmations struct {
	subscribed bool // a SUBSCRIBE is in force or on its way
	sent       int  // SUBSCRIBE commands sent
	confirmed  int  // their confirmations received
	pending    []pending
}

// pending is a waiter waiting for the confirmation of a SUBSCRIBE.
type pending struct {
	want  int           // confirmed needed
	ready chan struct{} // closed on confirmation
}

// Subscribed reports whether a SUBSCRIBE is in force or on its way.
func (s *Confirmations) Subscribed() bool { return s.subscribed }

// Settled reports whether every SUBSCRIBE sent has been confirmed.
func (s *Confirmations) Settled() bool { return s.confirmed == s.sent }

// Subscribe calls send to send a SUBSCRIBE, unless one is in force or on
// its way, and counts it. When send fails, nothing is counted and its error
// is returned.
func (s *Confirmations) Subscribe(send func() error) error {
	if s.subscribed {
		return nil
	}
	s.subscribed = true
	s.sent++
	if err := send(); err != nil {
		s.sent--
		s.subscribed = false
		return err
	}
	return nil
}

// Unsubscribe records that the caller sends UNSUBSCRIBE.
func (s *Confirmations) Unsubscribe() { s.subscribed = false }

// Ready returns a channel that is closed once Redis has confirmed every
// SUBSCRIBE sent so far. A caller that stops waiting for it calls Abandon.
func (s *Confirmations) Ready() <-chan struct{} {
	p := pending{want: s.sent, ready: make(chan struct{})}
	if s.confirmed >= p.want {
		close(p.ready)
	} else {
		s.pending = append(s.pending, p)
	}
	return p.ready
}

// Abandon forgets ready, a channel from Ready that nobody waits for any
// more.
func (s *Confirmations) Abandon(ready <-chan struct{}) {
	s.pending = slices.DeleteFunc(s.pending, func(p pending) bool { return p.ready == ready })
}

// Confirm counts a confirmation of a SUBSCRIBE and closes the channels from
// Ready it completes. It reports whether the confirmation was of a
// resubscription after a reconnect: messages may have been lost meanwhile.
func (s *Confirmations) Confirm() (resubscribed bool) {
	s.confirmed++
	if s.confirmed > s.sent {
		s.confirmed = s.sent
		resubscribed = true
	}
	s.pending = slices.DeleteFunc(s.pending, func(p pending) bool {
		if p.want <= s.confirmed {
			close(p.ready)
			return true
		}
		return false
	})
	return resubscribed
}

// Lingers counts the linger timers of a hub, which unsubscribe a channel
// some time after its last waiter left, so that a hub's Close can wait for
// those that run. The zero value is ready.
type Lingers struct {
	wg sync.WaitGroup // timers armed or running
}

// AfterFunc arms a timer that calls f after d.
func (l *Lingers) AfterFunc(d time.Duration, f func()) *time.Timer {
	l.wg.Add(1)
	return time.AfterFunc(d, func() {
		defer l.wg.Done()
		f()
	})
}

// Stop stops *t, a timer from AfterFunc or nil, and sets *t to nil.
func (l *Lingers) Stop(t **time.Timer) {
	if *t != nil && (*t).Stop() {
		l.wg.Done()
	}
	*t = nil
}

// Wait waits until every timer armed is stopped or has returned.
func (l *Lingers) Wait() { l.wg.Wait() }
