package pglock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haita/haita/lock"
)

// NewSemaphore returns a [lock.Semaphore] with limit permits per key on
// PostgreSQL, running its statements on pool; see [New] for the table
// option and the default TTL. The semaphore tables and functions must
// exist (see [CreateSemaphoreTables]).
//
// Each operation is one statement (acquire and queueing call a PL/pgSQL
// function), so a permit costs one round trip, as a mutex does. A key's
// row in the keys table is locked by every acquire, so the grants of a key
// are serialised and see each other; expiry is judged by the database
// clock; tokens come from the mutex table's sequence, drawn under that row
// lock. Waiters queue in the database in arrival order (FIFO across
// processes), woken by NOTIFY; a waiter's place is kept for a TTL after its
// last attempt. It returns an error matching [lock.ErrInvalidOptions] for
// a nil pool, a nil option, an invalid table name, a bad limit or invalid
// opts.
func NewSemaphore(pool *pgxpool.Pool, opts lock.Options, limit int, options ...Option) (*lock.Semaphore, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pglock: nil pool", lock.ErrInvalidOptions)
	}
	b, err := newSemBackend(poolClient{pool}, options)
	if err != nil {
		return nil, err
	}
	return lock.NewSemaphore(b, opts, limit)
}

// NewRWLocker returns a [lock.RWLocker] on PostgreSQL, on the same tables
// as [NewSemaphore]: a writer takes every permit of its key, and a waiting
// writer holds back readers that come after it. It returns an error
// matching [lock.ErrInvalidOptions] for a nil pool, a nil option, an
// invalid table name or invalid opts.
func NewRWLocker(pool *pgxpool.Pool, opts lock.Options, options ...Option) (*lock.RWLocker, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pglock: nil pool", lock.ErrInvalidOptions)
	}
	b, err := newSemBackend(poolClient{pool}, options)
	if err != nil {
		return nil, err
	}
	return lock.NewRWLocker(b, opts)
}

// SemaphoreSchema returns the statements that create the semaphore tables
// and functions of a lease table (idempotent), for use in migrations: the
// keys table TABLE_s, the permits TABLE_p, the waiters TABLE_w and the
// functions TABLE_sa (acquire) and TABLE_sq (queue a waiter), beside the
// lease table's sequence, which [Schema] creates. An empty table selects
// [DefaultTable]. It returns an error matching [lock.ErrInvalidOptions] for
// an invalid name.
func SemaphoreSchema(table string) (string, error) {
	n, err := parseTable(table)
	if err != nil {
		return "", err
	}
	s := semNames(n)
	return strings.NewReplacer("{K}", s.keys, "{P}", s.permits, "{W}", s.waiters, "{SA}", s.acquire,
		"{SQ}", s.queue, "{SEQ}", n.seqText).Replace(semSchema), nil
}

// CreateSemaphoreTables creates the lease table (see [CreateTable]) and the
// semaphore tables and functions with pool unless they exist.
func CreateSemaphoreTables(ctx context.Context, pool *pgxpool.Pool, table string) error {
	return createSemTables(ctx, poolClient{pool}, table)
}

// CreateSemaphoreTablesDB is [CreateSemaphoreTables] for a *sql.DB.
func CreateSemaphoreTablesDB(ctx context.Context, db *sql.DB, table string) error {
	return createSemTables(ctx, dbClient{db}, table)
}

func createSemTables(ctx context.Context, c client, table string) error {
	ddl, err := Schema(table)
	if err != nil {
		return err
	}
	sem, err := SemaphoreSchema(table)
	if err != nil {
		return err
	}
	return createTable(ctx, c, ddl+sem)
}

// semSchema is the DDL; {K}, {P}, {W}, {SA}, {SQ} and {SEQ} are replaced by
// quoted names. Both functions lock the key's row first, drop expired
// permits and waiters, and check the limit: an idle key adopts the
// request's, a busy one answers code 2 with its own.
const semSchema = `CREATE TABLE IF NOT EXISTS {K} (
	key     text   PRIMARY KEY,
	permits int    NOT NULL,
	seq     bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {P} (
	key        text        NOT NULL,
	owner      text        NOT NULL,
	holder     text        NOT NULL,
	weight     int         NOT NULL,
	token      bigint      NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (key, owner)
);
CREATE TABLE IF NOT EXISTS {W} (
	key        text        NOT NULL,
	owner      text        NOT NULL,
	seq        bigint      NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (key, owner)
);
-- Takes p_weight of p_limit permits for p_owner: code 1 and the token;
-- code 0 and the microseconds until the first permit expires (-1: none)
-- when there is no room or another waiter comes first; code 2 and the
-- key's limit when it disagrees. p_waiting queues p_owner again if its
-- place expired; a grant that leaves room wakes the others on p_channel.
CREATE OR REPLACE FUNCTION {SA}(p_key text, p_owner text, p_holder text, p_ttl bigint,
	p_limit int, p_weight int, p_waiting bool, p_channel text, OUT code int, OUT val bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_have int;
	v_used bigint;
	v_head text;
	v_seq bigint;
BEGIN
	INSERT INTO {K} (key, permits, seq) VALUES (p_key, p_limit, 0) ON CONFLICT (key) DO NOTHING;
	SELECT permits INTO v_have FROM {K} WHERE key = p_key FOR UPDATE;
	DELETE FROM {P} WHERE key = p_key AND expires_at <= clock_timestamp();
	DELETE FROM {W} WHERE key = p_key AND expires_at <= clock_timestamp();
	IF NOT EXISTS (SELECT FROM {P} WHERE key = p_key) AND NOT EXISTS (SELECT FROM {W} WHERE key = p_key) THEN
		UPDATE {K} SET permits = p_limit WHERE key = p_key;
	ELSIF v_have <> p_limit THEN
		code := 2; val := v_have; RETURN;
	END IF;
	IF p_waiting THEN
		UPDATE {K} SET seq = seq + 1 WHERE key = p_key RETURNING seq INTO v_seq;
		INSERT INTO {W} (key, owner, seq, expires_at)
		VALUES (p_key, p_owner, v_seq, clock_timestamp() + p_ttl * interval '1 microsecond')
		ON CONFLICT (key, owner) DO NOTHING;
	END IF;
	SELECT owner INTO v_head FROM {W} WHERE key = p_key ORDER BY seq LIMIT 1;
	SELECT coalesce(sum(weight), 0) INTO v_used FROM {P} WHERE key = p_key;
	IF (v_head IS NULL OR v_head = p_owner) AND v_used + p_weight <= p_limit THEN
		DELETE FROM {W} WHERE key = p_key AND owner = p_owner;
		INSERT INTO {P} (key, owner, holder, weight, token, expires_at)
		VALUES (p_key, p_owner, p_holder, p_weight, nextval({SEQ}), clock_timestamp() + p_ttl * interval '1 microsecond')
		RETURNING token INTO val;
		IF v_used + p_weight < p_limit AND EXISTS (SELECT FROM {W} WHERE key = p_key) THEN
			PERFORM pg_notify(p_channel, p_key);
		END IF;
		code := 1; RETURN;
	END IF;
	UPDATE {W} SET expires_at = clock_timestamp() + p_ttl * interval '1 microsecond'
	WHERE key = p_key AND owner = p_owner;
	code := 0;
	SELECT coalesce((extract(epoch FROM min(expires_at) - clock_timestamp()) * 1e6)::bigint, -1)
	INTO val FROM {P} WHERE key = p_key;
END $$;
-- Queues p_owner as a waiter of p_key: code 0, or code 2 and the key's
-- limit when it disagrees with p_limit.
CREATE OR REPLACE FUNCTION {SQ}(p_key text, p_owner text, p_ttl bigint, p_limit int,
	OUT code int, OUT val bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_have int;
	v_seq bigint;
BEGIN
	INSERT INTO {K} (key, permits, seq) VALUES (p_key, p_limit, 0) ON CONFLICT (key) DO NOTHING;
	SELECT permits INTO v_have FROM {K} WHERE key = p_key FOR UPDATE;
	DELETE FROM {P} WHERE key = p_key AND expires_at <= clock_timestamp();
	DELETE FROM {W} WHERE key = p_key AND expires_at <= clock_timestamp();
	IF NOT EXISTS (SELECT FROM {P} WHERE key = p_key) AND NOT EXISTS (SELECT FROM {W} WHERE key = p_key) THEN
		UPDATE {K} SET permits = p_limit WHERE key = p_key;
	ELSIF v_have <> p_limit THEN
		code := 2; val := v_have; RETURN;
	END IF;
	UPDATE {K} SET seq = seq + 1 WHERE key = p_key RETURNING seq INTO v_seq;
	INSERT INTO {W} (key, owner, seq, expires_at)
	VALUES (p_key, p_owner, v_seq, clock_timestamp() + p_ttl * interval '1 microsecond')
	ON CONFLICT (key, owner) DO UPDATE SET expires_at = excluded.expires_at;
	code := 0; val := 0;
END $$;
`

// semTables are the quoted names of the semaphore tables and functions.
type semTables struct {
	keys, permits, waiters, acquire, queue string
	channel                                string
}

func semNames(n names) semTables {
	suffix := func(s string) string { return strings.TrimSuffix(n.table, `"`) + s + `"` }
	return semTables{keys: suffix("_s"), permits: suffix("_p"), waiters: suffix("_w"),
		acquire: suffix("_sa"), queue: suffix("_sq"), channel: n.channel + "_sem"}
}

func newSemBackend(c client, options []Option) (*semBackend, error) {
	var cfg config
	for _, o := range options {
		if o == nil {
			return nil, fmt.Errorf("%w: pglock: nil Option", lock.ErrInvalidOptions)
		}
		o(&cfg)
	}
	n, err := parseTable(cfg.table)
	if err != nil {
		return nil, err
	}
	s := semNames(n)
	b := &semBackend{c: c, s: s,
		acquireSQL: "SELECT code, val FROM " + s.acquire + "($1, $2, $3, $4, $5, $6, $7, $8)",
		queueSQL:   "SELECT code, val FROM " + s.queue + "($1, $2, $3, $4)",
		refreshSQL: "UPDATE " + s.permits + ` SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp()`,
		// The notification is sent only when the release commits.
		releaseSQL: `WITH d AS (
	DELETE FROM ` + s.permits + ` WHERE key = $1 AND owner = $2 RETURNING expires_at > clock_timestamp() AS live
)
SELECT coalesce((SELECT live FROM d), false),
	(SELECT count(*) FROM (SELECT pg_notify($3, $1) WHERE EXISTS (SELECT FROM d)
		AND EXISTS (SELECT FROM ` + s.waiters + ` WHERE key = $1)) n)`,
		// Leaving wakes the others when the waiter was the first.
		leaveSQL: `WITH d AS (
	DELETE FROM ` + s.waiters + ` WHERE key = $1 AND owner = $2 RETURNING seq
)
SELECT count(*) FROM (SELECT pg_notify($3, $1) FROM d
	WHERE NOT EXISTS (SELECT FROM ` + s.waiters + ` w WHERE w.key = $1 AND w.seq < d.seq)) n`,
	}
	b.q = lock.NewWaitQueue(func(lock.Request) {})
	// A notification (payload: the key) wakes the first local waiter of
	// that key, which keeps the waiters' order; after a reconnection the
	// first waiter of every key looks again.
	b.l = newListener(c, []string{s.channel}, func(_, key string) { b.q.Wake(key) }, b.q.WakeAll)
	return b, nil
}

// semBackend implements lock.Backend and lock.Notifier for semaphores and
// reader-writer locks. The listener wakes the first local waiter of a key
// on a notification; a waiter that gets a permit or leaves wakes the next
// (lock.WaitQueue does), and the queue in the database decides whose turn
// it is.
type semBackend struct {
	c          client
	s          semTables
	q          *lock.WaitQueue
	l          *listener
	acquireSQL string
	queueSQL   string
	refreshSQL string
	releaseSQL string
	leaveSQL   string

	mu      sync.Mutex // keeps local and database queue order alike
	waiting sync.Map   // lock.Owner → struct{}: the owners waiting
}

var (
	_ lock.Backend  = (*semBackend)(nil)
	_ lock.Notifier = (*semBackend)(nil)
)

func (b *semBackend) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "postgres", TTL: true, Fencing: true, FIFO: true, LossDetection: true,
		CrossProcess: true, Notify: true, Semaphore: true, RWLock: true}
}

func (b *semBackend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *semBackend) Close() error {
	b.l.close()
	return nil
}

func semResult(req lock.Request, code int, val int64, sent time.Time) (lock.Grant, error) {
	switch code {
	case 1:
		return lock.Grant{Token: lock.Token(val)}, nil
	case 2:
		return lock.Grant{}, &lock.LimitError{Key: req.Key, Have: int(val), Want: req.Share.Limit}
	}
	he := &lock.HeldError{Key: req.Key}
	if val > 0 {
		he.ExpiresAt = sent.Add(time.Duration(val) * time.Microsecond)
	}
	return lock.Grant{}, he
}

func (b *semBackend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	_, waiting := b.waiting.Load(req.Owner)
	var code int
	var val int64
	sent := time.Now()
	err := b.c.queryRow(ctx, b.acquireSQL, req.Key, req.Owner.String(), req.Holder, req.TTL.Microseconds(),
		req.Share.Limit, req.Share.Weight, waiting, b.s.channel).Scan(&code, &val)
	if err != nil {
		return lock.Grant{}, fmt.Errorf("pglock: acquire: %w", err)
	}
	return semResult(req, code, val, sent)
}

func (b *semBackend) Refresh(ctx context.Context, req lock.Request) error {
	n, err := b.c.exec(ctx, b.refreshSQL, req.Key, req.Owner.String(), req.TTL.Microseconds())
	if err != nil {
		return fmt.Errorf("pglock: refresh: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("pglock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

func (b *semBackend) Release(ctx context.Context, req lock.Request) error {
	var live bool
	var notified int64
	if err := b.c.queryRow(ctx, b.releaseSQL, req.Key, req.Owner.String(), b.s.channel).Scan(&live, &notified); err != nil {
		return fmt.Errorf("pglock: release: %w", err)
	}
	if !live {
		return fmt.Errorf("pglock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

// Subscribe implements lock.Notifier: once LISTEN is in effect the waiter
// joins the local queue and the queue in the database, in the same order.
func (b *semBackend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.l.start(ctx); err != nil {
		return nil, err
	}
	sub := b.q.Join(req)
	var code int
	var val int64
	err := b.c.queryRow(ctx, b.queueSQL, req.Key, req.Owner.String(), req.TTL.Microseconds(), req.Share.Limit).Scan(&code, &val)
	if err == nil && code != 0 {
		_, err = semResult(req, code, val, time.Now())
	}
	if err != nil {
		sub.Close()
		if !errors.Is(err, lock.ErrLimitMismatch) {
			err = fmt.Errorf("pglock: queue: %w", err)
		}
		return nil, err
	}
	b.waiting.Store(req.Owner, struct{}{})
	return &semSub{Subscription: sub, b: b, req: req}, nil
}

// semSub takes the waiter out of the database's queue when it closes.
type semSub struct {
	lock.Subscription
	b   *semBackend
	req lock.Request
}

func (s *semSub) Close() {
	s.b.waiting.Delete(s.req.Owner)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int64
	_ = s.b.c.queryRow(ctx, s.b.leaveSQL, s.req.Key, s.req.Owner.String(), s.b.s.channel).Scan(&n)
	s.Subscription.Close()
}
