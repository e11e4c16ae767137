package pglock

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haita/haita/lock"
)

// The waiter queue in the database. A waiter of any process puts a row in
// the wait table (the lease table's name + "_wait"): key, order (a value of
// the token sequence), owner value, holder, TTL, the channel its Locker
// listens on, and an expiry it keeps pushing forward every TTL/3. A release
// hands the lease row to the oldest live waiter of its key in the same
// statement and notifies that waiter's channel alone; only when nobody
// waits does it free the row and notify the table's channel.
const (
	// The acquire statement's first two parts, shared by the statements
	// below. $1 key, $2 owner, $3 holder, $4 TTL in microseconds. cur sees
	// a live row in the statement's snapshot without locking it; only when
	// there is none does the INSERT run, and ON CONFLICT then re-checks the
	// expiry on the latest row version under its row lock.
	acquireCTE = `cur AS (
	SELECT holder, expires_at FROM %[1]s WHERE key = $1 AND expires_at > now()
), ins AS (
	INSERT INTO %[1]s AS l (key, owner, holder, token, expires_at)
	SELECT $1, $2, $3, nextval(%[2]s), now() + $4::bigint * interval '1 microsecond'
	WHERE NOT EXISTS (SELECT FROM cur)
	ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, holder = excluded.holder,
		token = nextval(%[2]s), expires_at = excluded.expires_at
	WHERE l.expires_at <= now()
	RETURNING token
)`
	acquireResult = `coalesce((SELECT token FROM ins), 0),
	coalesce((SELECT holder FROM cur), ''),
	coalesce((SELECT (extract(epoch FROM expires_at - now()) * 1e6)::bigint FROM cur), 0)`

	// enqueueSQL takes the key if it is free and queues the waiter
	// otherwise ($5: its Locker's channel), removing expired waiters of the
	// key on the way. %[3]s is the wait table.
	enqueueSQL = `WITH ` + acquireCTE + `, gc AS (
	DELETE FROM %[3]s WHERE key = $1 AND expires_at <= now()
), q AS (
	INSERT INTO %[3]s (key, seq, owner, holder, channel, ttl, expires_at)
	SELECT $1, nextval(%[2]s), $2, $3, $5, $4, now() + $4::bigint * interval '1 microsecond'
	WHERE NOT EXISTS (SELECT FROM ins)
)
SELECT 0::bigint, ` + acquireResult

	// checkSQL is a queued waiter's look after a wake-up that was not a
	// handoff addressed to it: does it hold the key already (a handoff
	// whose notification was lost), or is the key free to take? Taking it
	// also removes the waiter's row.
	checkSQL = `WITH own AS (
	SELECT token FROM %[1]s WHERE key = $1 AND owner = $2 AND expires_at > now()
), ` + acquireCTE + `, d AS (
	DELETE FROM %[3]s WHERE key = $1 AND owner = $2 AND EXISTS (SELECT FROM ins)
)
SELECT coalesce((SELECT token FROM own), 0), ` + acquireResult

	// heartbeatSQL keeps a waiter's row alive.
	heartbeatSQL = `UPDATE %[3]s SET expires_at = now() + ttl * interval '1 microsecond'
WHERE key = $1 AND owner = $2 AND expires_at > now()`

	leaveSQL = `DELETE FROM %[3]s WHERE key = $1 AND owner = $2`

	// queueReleaseSQL releases $1 held by $2: it gives the lease row to the
	// oldest live waiter (a new token, its holder, its TTL from now, but
	// never less than its row's expiry, which the waiter counts its lease
	// from) and notifies that waiter's channel with "token owner key", or
	// frees the row and notifies the table's channel ($3) with the key.
	// A handoff also notifies the channel $4 with the key, which only
	// holder readers listen on (see SubscribeHolder).
	// A waiter row locked by its own heartbeat or departure is skipped
	// rather than waited for; when that leaves nobody, the row is freed
	// and the table's channel wakes the skipped waiter.
	queueReleaseSQL = `WITH nxt AS (
	SELECT seq, owner, holder, channel, ttl, expires_at FROM %[3]s
	WHERE key = $1 AND expires_at > now()
	ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
), h AS (
	UPDATE %[1]s l SET owner = coalesce(n.owner, ''), holder = coalesce(n.holder, ''),
		token = CASE WHEN n.owner IS NULL THEN l.token ELSE nextval(%[2]s) END,
		expires_at = CASE WHEN n.owner IS NULL THEN '-infinity'::timestamptz
			ELSE greatest(now() + n.ttl * interval '1 microsecond', n.expires_at) END
	FROM (SELECT 1) one LEFT JOIN nxt n ON true
	WHERE l.key = $1 AND l.owner = $2 AND l.expires_at > now()
	RETURNING l.token, n.seq, n.owner, n.channel
), d AS (
	DELETE FROM %[3]s w USING h WHERE w.key = $1 AND w.seq = h.seq
)
SELECT (SELECT count(*) FROM h), coalesce((SELECT owner FROM h), ''), coalesce((SELECT token FROM h), 0),
	(SELECT count(*) FROM (SELECT pg_notify(coalesce(h.channel, $3),
		CASE WHEN h.owner IS NULL THEN $1 ELSE h.token || ' ' || h.owner || ' ' || $1 END) FROM h) x),
	(SELECT count(*) FROM (SELECT pg_notify($4, $1) FROM h WHERE h.owner IS NOT NULL) y)`
)

// waiters are the Locker's queued Acquire calls, by owner value.
type waiters struct {
	mu      sync.Mutex
	byOwner map[string]*waiter
	byKey   map[string]*keyWaiters
}

// keyWaiters are the waiters of one key.
type keyWaiters struct {
	n int
	// enqueue is held while one of them queues in the table, so that they
	// are queued there in the order they came.
	enqueue sync.Mutex
}

// waiter is one queued Acquire.
type waiter struct {
	key   string
	k     *keyWaiters
	grant chan int64    // a token handed over, buffered
	wake  chan struct{} // look again, buffered
}

func (ws *waiters) add(req lock.Request) *waiter {
	w := &waiter{key: req.Key, grant: make(chan int64, 1), wake: make(chan struct{}, 1)}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.byOwner == nil {
		ws.byOwner = make(map[string]*waiter)
		ws.byKey = make(map[string]*keyWaiters)
	}
	ws.byOwner[req.Owner.String()] = w
	k := ws.byKey[req.Key]
	if k == nil {
		k = &keyWaiters{}
		ws.byKey[req.Key] = k
	}
	k.n++
	w.k = k
	return w
}

func (ws *waiters) remove(req lock.Request) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.byOwner, req.Owner.String())
	if k := ws.byKey[req.Key]; k != nil {
		if k.n--; k.n == 0 {
			delete(ws.byKey, req.Key)
		}
	}
}

// waiting reports whether key has waiters here.
func (ws *waiters) waiting(key string) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.byKey[key] != nil
}

// handed delivers a handoff to owner, if it waits here.
func (ws *waiters) handed(owner string, token int64) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w := ws.byOwner[owner]; w != nil {
		select {
		case w.grant <- token:
		default:
		}
	}
}

// handedPayload parses a notification on the Locker's own channel,
// "token owner key", and delivers it.
func (ws *waiters) handedPayload(payload string) {
	tok, rest, ok := strings.Cut(payload, " ")
	if !ok {
		return
	}
	owner, _, ok := strings.Cut(rest, " ")
	if !ok {
		return
	}
	token, err := strconv.ParseInt(tok, 10, 64)
	if err != nil || token <= 0 {
		return
	}
	ws.handed(owner, token)
}

// wakeKey wakes every waiter of key (empty: every waiter).
func (ws *waiters) wakeKey(key string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.byOwner {
		if key == "" || w.key == key {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Wait queues req in the wait table and returns when a release hands the
// key to it, or when it finds the key free. See the package doc.
func (b *backend) Wait(ctx context.Context, req lock.Request) (lock.Grant, error) {
	start := time.Now()
	b.l.start(ctx)
	w := b.ws.add(req)
	defer b.ws.remove(req)
	g, err := b.wait(ctx, req, w, start)
	if err != nil {
		// Leave the queue, and give back (hand on) a key that may have
		// come to us meanwhile, with a context of our own: ctx may be why
		// we stopped.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = b.c.exec(cctx, b.leaveSQL, req.Key, req.Owner.String())
		_ = b.release(cctx, req)
		if ctx.Err() != nil {
			return lock.Grant{}, ctx.Err()
		}
		return lock.Grant{}, fmt.Errorf("pglock: acquire: %w", err)
	}
	return g, nil
}

// stmtContext is the context of a waiter's statement: it does not end with
// the caller's, because the server finishes a statement whose client gave
// up, and a waiter row or grant committed after the waiter's cleanup would
// be left behind. It ends after a TTL or at Close.
func (b *backend) stmtContext(req lock.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.bg, req.TTL)
}

// waitPoll is how often a waiter looks when its Locker is not listening.
const waitPoll = 50 * time.Millisecond

func (b *backend) wait(ctx context.Context, req lock.Request, w *waiter, start time.Time) (lock.Grant, error) {
	// A handoff's lease lasts at least until the waiter row's expiry,
	// which the waiter set in its last successful statement: its lease
	// counts from when that statement was sent.
	var last time.Time
	granted := func(token int64, from time.Time) (lock.Grant, error) {
		return lock.Grant{Token: lock.Token(token), Validity: from.Add(req.TTL).Sub(start)}, nil
	}
	// run runs stmt and reports a grant: own (handed over earlier) or
	// taken now; otherwise when the holder's lease ends.
	var holderEnds time.Time
	run := func(stmt string, args ...any) (own, taken int64, sent time.Time, err error) {
		var holder string
		var remaining int64
		sctx, cancel := b.stmtContext(req)
		defer cancel()
		sent = time.Now()
		err = b.c.queryRow(sctx, stmt, args...).Scan(&own, &taken, &holder, &remaining)
		holderEnds = time.Time{}
		if remaining > 0 {
			holderEnds = sent.Add(time.Duration(remaining) * time.Microsecond)
		}
		return own, taken, sent, err
	}
	enqueue := func() (int64, time.Time, error) {
		_, taken, sent, err := run(b.enqueueSQL, req.Key, req.Owner.String(), req.Holder, req.TTL.Microseconds(), b.own)
		return taken, sent, err
	}
	// look runs the check statement and reports a grant: one handed over
	// earlier, or the key found free and taken now.
	look := func() (lock.Grant, bool, error) {
		own, taken, sent, err := run(b.checkSQL, req.Key, req.Owner.String(), req.Holder, req.TTL.Microseconds())
		switch {
		case err != nil:
			return lock.Grant{}, false, err
		case own > 0:
			g, _ := granted(own, last)
			return g, true, nil
		case taken > 0:
			g, _ := granted(taken, sent)
			return g, true, nil
		}
		return lock.Grant{}, false, nil
	}
	w.k.enqueue.Lock()
	taken, sent, err := enqueue()
	w.k.enqueue.Unlock()
	if err != nil {
		return lock.Grant{}, err
	}
	if taken > 0 {
		return granted(taken, sent)
	}
	last = sent
	beat := req.TTL / 3
	nextBeat := sent.Add(beat)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d := time.Until(nextBeat)
		if !holderEnds.IsZero() {
			d = min(d, time.Until(holderEnds)+time.Millisecond)
		}
		if !b.l.listening() {
			d = min(d, waitPoll)
		}
		timer.Reset(max(d, 0))
		check := false
		select {
		case <-ctx.Done():
			return lock.Grant{}, ctx.Err()
		case token := <-w.grant:
			return granted(token, last)
		case <-w.wake:
			check = true
		case <-timer.C:
			if time.Now().Before(nextBeat) {
				check = true
				break
			}
			sctx, cancel := b.stmtContext(req)
			sent := time.Now()
			n, err := b.c.exec(sctx, b.heartbeatSQL, req.Key, req.Owner.String())
			cancel()
			if err != nil {
				return lock.Grant{}, err
			}
			nextBeat = sent.Add(beat)
			if n == 1 {
				last = sent
				continue
			}
			// The row is gone: handed the key, or expired and removed.
			if g, ok, err := look(); ok || err != nil {
				return g, err
			}
			taken, sent, err := enqueue()
			if err != nil {
				return lock.Grant{}, err
			}
			if taken > 0 {
				return granted(taken, sent)
			}
			last, nextBeat = sent, sent.Add(beat)
		}
		if check {
			if g, ok, err := look(); ok || err != nil {
				return g, err
			}
		}
	}
}
