package mysqllock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/haita/haita/lock"
)

// NewSemaphore returns a [lock.Semaphore] with limit permits per key on
// MySQL or MariaDB; see [New] for db, the table option and the default TTL.
// The semaphore tables must exist (see [CreateSemaphoreTables]).
//
// An acquire is one transaction that locks the key's row in the keys table
// (SELECT … FOR UPDATE), so the grants of a key are serialised and see each
// other; it drops expired permits and waiters, checks the limit, and grants
// when there is room and no earlier waiter is queued. Expiry is judged by
// the server's clock; tokens come from a counter in the key's row, drawn
// under that lock. Waiters queue in the database in arrival order (FIFO
// across processes); MySQL has no notification, so a release wakes the
// waiters of its own Locker at once and others poll (lock.Options.
// PollInterval, default [DefaultPollInterval]). A transaction costs several
// round trips: a permit costs more than a mutex here. It returns an error
// matching [lock.ErrInvalidOptions] for a nil db, a nil option, an invalid
// table name, a bad limit or invalid opts.
func NewSemaphore(db *sql.DB, opts lock.Options, limit int, options ...Option) (*lock.Semaphore, error) {
	b, err := newSemBackend(db, opts, options)
	if err != nil {
		return nil, err
	}
	return lock.NewSemaphore(b, b.opts, limit)
}

// NewRWLocker returns a [lock.RWLocker] on MySQL or MariaDB, on the same
// tables as [NewSemaphore]: a writer takes every permit of its key, and a
// waiting writer holds back readers that come after it.
func NewRWLocker(db *sql.DB, opts lock.Options, options ...Option) (*lock.RWLocker, error) {
	b, err := newSemBackend(db, opts, options)
	if err != nil {
		return nil, err
	}
	return lock.NewRWLocker(b, b.opts)
}

// SemaphoreSchema returns the statements, separated by ";\n", that create
// the semaphore tables of a lease table (idempotent): TABLE_s (one row per
// key: its limit, token counter and arrival counter; never deleted, so
// tokens never go back), TABLE_p (permits) and TABLE_w (waiters).
func SemaphoreSchema(table string) (string, error) {
	t, err := semTableNames(table)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	lock_key VARBINARY(512) NOT NULL PRIMARY KEY,
	permits  INT NOT NULL,
	fence    BIGINT NOT NULL,
	seq      BIGINT NOT NULL
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS %s (
	lock_key   VARBINARY(512) NOT NULL,
	owner      CHAR(32) CHARACTER SET ascii NOT NULL,
	holder     VARCHAR(256) CHARACTER SET utf8mb4 NOT NULL,
	weight     INT NOT NULL,
	token      BIGINT NOT NULL,
	expires_at DATETIME(6) NOT NULL,
	PRIMARY KEY (lock_key, owner)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS %s (
	lock_key   VARBINARY(512) NOT NULL,
	owner      CHAR(32) CHARACTER SET ascii NOT NULL,
	seq        BIGINT NOT NULL,
	expires_at DATETIME(6) NOT NULL,
	PRIMARY KEY (lock_key, owner)
) ENGINE=InnoDB`, t.keys, t.permits, t.waiters), nil
}

// CreateSemaphoreTables creates the semaphore tables in db unless they
// exist. An empty name selects [DefaultTable].
func CreateSemaphoreTables(ctx context.Context, db *sql.DB, table string) error {
	ddl, err := SemaphoreSchema(table)
	if err != nil {
		return err
	}
	for _, st := range strings.Split(ddl, ";\n") {
		if _, err := db.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("mysqllock: create semaphore tables: %w", err)
		}
	}
	return nil
}

type semTables struct{ keys, permits, waiters string }

func semTableNames(table string) (semTables, error) {
	if table == "" {
		table = DefaultTable
	}
	if _, err := quoteTable(table + "_s"); err != nil {
		return semTables{}, err
	}
	q := func(s string) string { n, _ := quoteTable(table + s); return n }
	return semTables{keys: q("_s"), permits: q("_p"), waiters: q("_w")}, nil
}

func newSemBackend(db *sql.DB, opts lock.Options, options []Option) (*semBackend, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: mysqllock: nil db", lock.ErrInvalidOptions)
	}
	cfg := config{table: DefaultTable}
	for _, o := range options {
		if o == nil {
			return nil, fmt.Errorf("%w: mysqllock: nil Option", lock.ErrInvalidOptions)
		}
		o(&cfg)
	}
	t, err := semTableNames(cfg.table)
	if err != nil {
		return nil, err
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	return &semBackend{db: db, t: t, opts: opts, waiting: make(map[lock.Owner]bool), subs: make(map[string]map[*semSub]bool)}, nil
}

// semBackend implements lock.Backend and lock.Notifier for semaphores and
// reader-writer locks.
type semBackend struct {
	db   *sql.DB
	t    semTables
	opts lock.Options

	mu      sync.Mutex
	waiting map[lock.Owner]bool
	subs    map[string]map[*semSub]bool // local waiters by key
}

var (
	_ lock.Backend  = (*semBackend)(nil)
	_ lock.Notifier = (*semBackend)(nil)
)

func (b *semBackend) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "mysql", TTL: true, Fencing: true, FIFO: true, LossDetection: true,
		CrossProcess: true, Semaphore: true, RWLock: true}
}

func (b *semBackend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *semBackend) Close() error { return nil }

// state is a key's row and its queue as one transaction sees them.
type state struct {
	fence, seq     int64
	used           int64
	holders, queue int64
	head           sql.NullString
	firstExpiry    sql.NullInt64 // microseconds from now
	queued         bool          // the request's owner is in the queue
}

// begin locks req.Key's row in a new transaction, drops expired permits and
// waiters, and checks the limit.
func (b *semBackend) begin(ctx context.Context, req lock.Request) (*sql.Tx, state, error) {
	var s state
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, s, err
	}
	fail := func(err error) (*sql.Tx, state, error) { _ = tx.Rollback(); return nil, s, err }
	key := []byte(req.Key)
	// ON DUPLICATE KEY UPDATE locks an existing row exclusively at once;
	// INSERT IGNORE would take a shared lock, and two transactions
	// upgrading theirs deadlock.
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+b.t.keys+" (lock_key, permits, fence, seq) VALUES (?, ?, 0, 0) ON DUPLICATE KEY UPDATE seq = seq", key, req.Share.Limit); err != nil {
		return fail(err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, "SELECT permits, fence, seq FROM "+b.t.keys+" WHERE lock_key = ? FOR UPDATE", key).Scan(&have, &s.fence, &s.seq); err != nil {
		return fail(err)
	}
	for _, t := range []string{b.t.permits, b.t.waiters} {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+t+" WHERE lock_key = ? AND expires_at <= UTC_TIMESTAMP(6)", key); err != nil {
			return fail(err)
		}
	}
	var queued int64
	err = tx.QueryRowContext(ctx, `SELECT
	(SELECT COUNT(*) FROM `+b.t.permits+` WHERE lock_key = ?),
	(SELECT COALESCE(SUM(weight), 0) FROM `+b.t.permits+` WHERE lock_key = ?),
	(SELECT COUNT(*) FROM `+b.t.waiters+` WHERE lock_key = ?),
	(SELECT owner FROM `+b.t.waiters+` WHERE lock_key = ? ORDER BY seq LIMIT 1),
	(SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), MIN(expires_at)) FROM `+b.t.permits+` WHERE lock_key = ?),
	(SELECT COUNT(*) FROM `+b.t.waiters+` WHERE lock_key = ? AND owner = ?)`,
		key, key, key, key, key, key, req.Owner.String()).Scan(&s.holders, &s.used, &s.queue, &s.head, &s.firstExpiry, &queued)
	if err != nil {
		return fail(err)
	}
	s.queued = queued > 0
	if s.holders == 0 && s.queue == 0 {
		if have != req.Share.Limit {
			if _, err := tx.ExecContext(ctx, "UPDATE "+b.t.keys+" SET permits = ? WHERE lock_key = ?", req.Share.Limit, key); err != nil {
				return fail(err)
			}
		}
	} else if have != req.Share.Limit {
		return fail(&lock.LimitError{Key: req.Key, Have: have, Want: req.Share.Limit})
	}
	return tx, s, nil
}

// enqueue puts req's owner at the end of the queue (or keeps its place)
// until a TTL from now.
func (b *semBackend) enqueue(ctx context.Context, tx *sql.Tx, req lock.Request, s *state) error {
	key := []byte(req.Key)
	if !s.queued {
		if _, err := tx.ExecContext(ctx, "UPDATE "+b.t.keys+" SET seq = seq + 1 WHERE lock_key = ?", key); err != nil {
			return err
		}
		s.seq++
		s.queue++
		if !s.head.Valid {
			s.head = sql.NullString{String: req.Owner.String(), Valid: true}
		}
		s.queued = true
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO `+b.t.waiters+` (lock_key, owner, seq, expires_at)
VALUES (?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at)`, key, req.Owner.String(), s.seq, req.TTL.Microseconds())
	return err
}

// retry runs fn again when InnoDB reports a deadlock (concurrent inserts of
// a new key's row can).
func retry[T any](fn func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := fn()
		if err == nil || i == 4 || !isDeadlock(err) {
			return v, err
		}
	}
}

func (b *semBackend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	waiting := b.waiting[req.Owner]
	b.mu.Unlock()
	sent := time.Now()
	g, err := retry(func() (lock.Grant, error) { return b.try(ctx, req, waiting, sent) })
	if err != nil && !errors.Is(err, lock.ErrNotAcquired) && !errors.Is(err, lock.ErrLimitMismatch) {
		err = fmt.Errorf("mysqllock: acquire: %w", err)
	}
	return g, err
}

func (b *semBackend) try(ctx context.Context, req lock.Request, waiting bool, sent time.Time) (lock.Grant, error) {
	tx, s, err := b.begin(ctx, req)
	if err != nil {
		return lock.Grant{}, err
	}
	defer tx.Rollback()
	if waiting {
		if err := b.enqueue(ctx, tx, req, &s); err != nil {
			return lock.Grant{}, err
		}
	}
	turn := !s.head.Valid || s.head.String == req.Owner.String()
	if turn && s.used+int64(req.Share.Weight) <= int64(req.Share.Limit) {
		key := []byte(req.Key)
		tok := s.fence + 1
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+b.t.waiters+" WHERE lock_key = ? AND owner = ?", key, req.Owner.String()); err != nil {
			return lock.Grant{}, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+b.t.permits+` (lock_key, owner, holder, weight, token, expires_at)
VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)`, key, req.Owner.String(), req.Holder, req.Share.Weight, tok, req.TTL.Microseconds()); err != nil {
			return lock.Grant{}, err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+b.t.keys+" SET fence = ? WHERE lock_key = ?", tok, key); err != nil {
			return lock.Grant{}, err
		}
		if err := tx.Commit(); err != nil {
			return lock.Grant{}, err
		}
		if s.used+int64(req.Share.Weight) < int64(req.Share.Limit) {
			b.wake(req.Key) // room for the next waiter too
		}
		return lock.Grant{Token: lock.Token(tok)}, nil
	}
	if err := tx.Commit(); err != nil {
		return lock.Grant{}, err
	}
	he := &lock.HeldError{Key: req.Key}
	if s.firstExpiry.Valid && s.firstExpiry.Int64 > 0 {
		he.ExpiresAt = sent.Add(time.Duration(s.firstExpiry.Int64) * time.Microsecond)
	}
	return lock.Grant{}, he
}

func (b *semBackend) Refresh(ctx context.Context, req lock.Request) error {
	res, err := b.db.ExecContext(ctx, `UPDATE `+b.t.permits+` SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)`, req.TTL.Microseconds(), []byte(req.Key), req.Owner.String())
	if err != nil {
		return fmt.Errorf("mysqllock: refresh: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("mysqllock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

func (b *semBackend) Release(ctx context.Context, req lock.Request) error {
	res, err := b.db.ExecContext(ctx, "DELETE FROM "+b.t.permits+" WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)",
		[]byte(req.Key), req.Owner.String())
	if err != nil {
		return fmt.Errorf("mysqllock: release: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("mysqllock: release: %w", err)
	}
	b.wake(req.Key)
	if n == 0 {
		// Gone, or expired: drop an expired row all the same.
		_, _ = b.db.ExecContext(ctx, "DELETE FROM "+b.t.permits+" WHERE lock_key = ? AND owner = ?", []byte(req.Key), req.Owner.String())
		return fmt.Errorf("mysqllock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

// Subscribe implements lock.Notifier: the waiter takes its place in the
// queue in the database, and is woken by releases of this backend and by a
// poll of lock.Options.PollInterval.
func (b *semBackend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	_, err := retry(func() (struct{}, error) {
		tx, s, err := b.begin(ctx, req)
		if err != nil {
			return struct{}{}, err
		}
		defer tx.Rollback()
		if err := b.enqueue(ctx, tx, req, &s); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, tx.Commit()
	})
	if err != nil {
		return nil, fmt.Errorf("mysqllock: queue: %w", err)
	}
	s := &semSub{b: b, req: req, c: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	b.mu.Lock()
	b.waiting[req.Owner] = true
	if b.subs[req.Key] == nil {
		b.subs[req.Key] = make(map[*semSub]bool)
	}
	b.subs[req.Key][s] = true
	b.mu.Unlock()
	go s.run(b.opts.PollInterval)
	return s, nil
}

// wake wakes the local waiters of key.
func (b *semBackend) wake(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs[key] {
		s.wake()
	}
}

// semSub is one waiter: woken by local releases and by a poll.
type semSub struct {
	b    *semBackend
	req  lock.Request
	c    chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func (s *semSub) wake() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

func (s *semSub) run(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.wake()
		}
	}
}

func (s *semSub) C() <-chan struct{} { return s.c }

// Close leaves the queue, waking the others, and stops the poll.
func (s *semSub) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		b := s.b
		b.mu.Lock()
		delete(b.waiting, s.req.Owner)
		delete(b.subs[s.req.Key], s)
		if len(b.subs[s.req.Key]) == 0 {
			delete(b.subs, s.req.Key)
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = b.db.ExecContext(ctx, "DELETE FROM "+b.t.waiters+" WHERE lock_key = ? AND owner = ?", []byte(s.req.Key), s.req.Owner.String())
		b.wake(s.req.Key)
	})
}
