package pglock

import (
	"context"
	"time"

	"github.com/haita/haita/lock"
)

// The waiters of one Locker take turns per key in the order they started
// waiting. Only the first (the head) asks the database; the others, and a
// new Acquire or TryAcquire of the same Locker, are told the key is held
// without a round trip ("queued"), so a goroutine that releases and at once
// acquires again cannot barge ahead of goroutines that have been waiting.
// A release by this Locker hands the key straight to the head, once the head
// has made itself known by calling Try: one UPDATE moves the row to the
// head's owner value with a new token, and the head takes the grant from its
// next Try without a round trip. After maxHandoffs handoffs in a row a
// release frees the row and notifies, so waiters in other processes get a
// turn. Waiters in other processes compete as usual: the order is local.

// maxHandoffs bounds how many times in a row a release hands a key straight
// to a waiter of the same Locker.
const maxHandoffs = 8

type verdict int

const (
	proceed    verdict = iota // ask the database
	queued                    // behind other local waiters: report the key held
	handedOver                // the key was handed over: here is the grant
)

// gate decides what a Try for req.Key does. It returns the waiter making
// the Try, or nil when the Try is not from a queued waiter.
func (l *listener) gate(ctx context.Context, req lock.Request) (lock.Grant, verdict, *subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.keys[req.Key]
	if q == nil {
		return lock.Grant{}, proceed, nil
	}
	var s *subscription
	for _, x := range q.waiters {
		if x.ctx == ctx {
			s = x
			break
		}
	}
	head := q.waiters[0]
	if s == nil {
		if !head.known {
			// The head has not shown up yet: do not hold others back on
			// the word of a waiter that may never ask.
			return lock.Grant{}, proceed, nil
		}
		return lock.Grant{}, queued, nil
	}
	s.known, s.req = true, req
	switch {
	case s.grant != nil:
		g := *s.grant
		s.grant = nil
		s.took = true
		// The Locker counts validity from its own send time, which is
		// after the handing UPDATE was sent: shorten it by the difference
		// so that the local deadline is reckoned from the UPDATE.
		g.Validity = max(req.TTL-time.Since(s.sent), time.Nanosecond)
		return g, handedOver, s
	case s.handing, s != head:
		return lock.Grant{}, queued, s
	}
	return lock.Grant{}, proceed, s
}

// granted records that the database granted the key to s.
func (l *listener) granted(s *subscription) {
	l.mu.Lock()
	s.took = true
	l.mu.Unlock()
}

// pickHandoff returns the waiter that the release of req should hand the key
// to, marked as being handed to, and its request; or nil when the release
// should free the key.
func (l *listener) pickHandoff(req lock.Request) (*subscription, lock.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.keys[req.Key]
	if q == nil {
		return nil, lock.Request{}
	}
	s := q.waiters[0]
	// A waiter that gives up releases what its Try may have taken while it
	// is still queued: that is not a handoff.
	if !s.known || s.handing || s.grant != nil || s.req.Owner == req.Owner || s.req.TTL <= 0 || q.handoffs >= maxHandoffs {
		q.handoffs = 0
		return nil, lock.Request{}
	}
	q.handoffs++
	s.handing = true
	return s, s.req
}

// handed records the grant a release made for s at sent and wakes s; when s
// has left meanwhile the key is released again.
func (l *listener) handed(s *subscription, g lock.Grant, sent time.Time) {
	l.mu.Lock()
	s.handing = false
	orphan, req := s.closed, s.req
	if !orphan {
		s.grant, s.sent = &g, sent
		s.wake()
	}
	l.mu.Unlock()
	if orphan {
		l.releaseOrphan(req)
	}
}

// notHanded undoes pickHandoff when the release handed nothing over, and
// wakes the head: the key may be free.
func (l *listener) notHanded(s *subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.handing = false
	s.q.handoffs = 0
	// s may have left, and the key's queue with it.
	if q := l.keys[s.q.key]; q != nil {
		q.waiters[0].wake()
	}
}
