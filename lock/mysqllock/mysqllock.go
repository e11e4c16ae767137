package mysqllock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haita/haita/lock"
)

// DefaultTable is the lease table used unless [WithTable] names another.
const DefaultTable = "haita_locks"

// DefaultTTL is the lease TTL used when lock.Options.TTL is zero.
const DefaultTTL = 30 * time.Second

// DefaultPollInterval is the poll of a waiting Acquire when
// lock.Options.PollInterval is zero: MySQL and MariaDB cannot notify a
// waiter in another process, so waiters look again every 25–50ms (and at
// the holder's expiry, which the table reports).
const DefaultPollInterval = 50 * time.Millisecond

// Locker is a [lock.Locker] on a MySQL or MariaDB lease table. It is safe
// for concurrent use; the caller must Close it (Close does not close the
// *sql.DB). A Locker is made by [New]; the zero value is not usable.
type Locker struct {
	lock.Locker
}

var _ lock.Locker = (*Locker)(nil)

// Option configures [New] beyond lock.Options.
type Option func(*config)

type config struct {
	table string
}

// WithTable selects the lease table: "locks" or "db.locks", each part
// matching [A-Za-z_][A-Za-z0-9_]* and at most 64 bytes. The default is
// [DefaultTable]. The table is created by [CreateTable], never by New.
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// New returns a Locker on the lease table in db, which must be opened with
// github.com/go-sql-driver/mysql. The table must exist (see [CreateTable]).
// Every statement runs on db's pool and is prepared once per connection,
// so acquire, refresh and release each cost one round trip (a failed
// acquire a second one, to read the holder for [lock.HeldError]).
//
// It returns an error matching [lock.ErrInvalidOptions] for a nil db, a db
// with another driver, an invalid table name or invalid opts.
func New(db *sql.DB, opts lock.Options, options ...Option) (*Locker, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: mysqllock: nil db", lock.ErrInvalidOptions)
	}
	if _, ok := db.Driver().(*mysql.MySQLDriver); !ok {
		return nil, fmt.Errorf("%w: mysqllock: db uses driver %T, not github.com/go-sql-driver/mysql", lock.ErrInvalidOptions, db.Driver())
	}
	cfg := config{table: DefaultTable}
	for _, o := range options {
		o(&cfg)
	}
	table, err := quoteTable(cfg.table)
	if err != nil {
		return nil, err
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	l, err := lock.New(newBackend(db, table), opts)
	if err != nil {
		return nil, err
	}
	return &Locker{Locker: l}, nil
}

// newBackend returns the backend on the quoted table in db.
func newBackend(db *sql.DB, table string) *backend {
	b := &backend{db: db}
	b.q = lock.NewWaitQueue(b.releaseOrphan)
	for i, text := range [...]string{stAcquire: acquireSQL, stHolder: holderSQL, stRefresh: refreshSQL, stRelease: releaseSQL, stHandoff: handoffSQL} {
		b.sql[i] = fmt.Sprintf(text, table)
	}
	return b
}

// Schema returns the statement that creates the lease table (idempotent:
// IF NOT EXISTS), for use in migrations. An empty name selects
// [DefaultTable]. It returns an error matching [lock.ErrInvalidOptions] for
// an invalid name.
//
// The key is a VARBINARY(512), compared byte for byte whatever the
// server's collation; expires_at is a UTC DATETIME(6) written and compared
// by the server's clock (UTC_TIMESTAMP(6)), so the session time zone and
// its daylight-saving changes play no part.
func Schema(table string) (string, error) {
	if table == "" {
		table = DefaultTable
	}
	q, err := quoteTable(table)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	lock_key   VARBINARY(512) NOT NULL PRIMARY KEY,
	owner      CHAR(32) CHARACTER SET ascii NOT NULL,
	holder     VARCHAR(256) CHARACTER SET utf8mb4 NOT NULL,
	token      BIGINT NOT NULL,
	expires_at DATETIME(6) NOT NULL
) ENGINE=InnoDB`, q), nil
}

// CreateTable creates the lease table in db unless it exists. It is safe to
// call concurrently and repeatedly. An empty name selects [DefaultTable].
func CreateTable(ctx context.Context, db *sql.DB, table string) error {
	ddl, err := Schema(table)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("mysqllock: create table: %w", err)
	}
	return nil
}

// ident matches one part of a table name.
var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// quoteTable validates a [db.]table name and quotes it with backticks.
func quoteTable(table string) (string, error) {
	parts := strings.Split(table, ".")
	ok := len(parts) <= 2
	for _, p := range parts {
		ok = ok && ident.MatchString(p)
	}
	if !ok {
		return "", fmt.Errorf("%w: mysqllock: table name %q is not [db.]table of letters, digits and underscores, each part at most 64 bytes",
			lock.ErrInvalidOptions, table)
	}
	return "`" + strings.Join(parts, "`.`") + "`", nil
}

// Statement indexes into backend.sql and prepared.
const (
	stAcquire = iota
	stHolder
	stRefresh
	stRelease
	stHandoff
)

// The statements; %[1]s is the quoted table. The server's clock alone
// decides expiry: UTC_TIMESTAMP(6) is the statement's start on the server,
// and durations travel as microseconds.
//
// acquireSQL inserts the row, or takes over a row whose expiry has passed,
// in one statement. The grant's token comes back as the statement's
// LAST_INSERT_ID (the OK packet's insert id, no second round trip); a key
// still held sets it to 0. The assignments run left to right and each
// condition reads expires_at, so expires_at is assigned last. The token is
// the previous token + 1, or the server's clock in microseconds since 1970
// when that is greater: strictly increasing per key while the row exists,
// and still greater than every earlier token when a row that was deleted
// (after being free for a while, see the package documentation) is
// inserted again.
const (
	acquireSQL = "INSERT INTO %[1]s (lock_key, owner, holder, token, expires_at) VALUES (?, ?, ?, " +
		"LAST_INSERT_ID(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6))), " +
		"UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND) " +
		"ON DUPLICATE KEY UPDATE " +
		"token = IF(expires_at <= UTC_TIMESTAMP(6), LAST_INSERT_ID(GREATEST(token + 1, VALUES(token))), IF(LAST_INSERT_ID(0) = 0, token, token)), " +
		"owner = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(owner), owner), " +
		"holder = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(holder), holder), " +
		"expires_at = IF(expires_at <= UTC_TIMESTAMP(6), VALUES(expires_at), expires_at)"

	// holderSQL reads who holds a key, for a HeldError and for Holder.
	holderSQL = "SELECT holder, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at), token FROM %[1]s " +
		"WHERE lock_key = ? AND expires_at > UTC_TIMESTAMP(6)"

	refreshSQL = "UPDATE %[1]s SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND " +
		"WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)"

	// releaseSQL marks the row free rather than deleting it, so that the
	// key's token keeps counting up.
	releaseSQL = "UPDATE %[1]s SET owner = '', holder = '', expires_at = '1970-01-01' " +
		"WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)"

	// handoffSQL moves a held key from one owner to another in one
	// statement: a new token (returned as LAST_INSERT_ID, as acquireSQL
	// does), the new owner's holder name and a full TTL; the row is never
	// free in between. No row changes when the first owner does not hold
	// the key.
	handoffSQL = "UPDATE %[1]s SET " +
		"token = LAST_INSERT_ID(GREATEST(token + 1, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)))), " +
		"owner = ?, holder = ?, expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND " +
		"WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)"
)

// backend implements lock.Backend and lock.Notifier on a lease table. Its
// subscriptions are places in the Locker's lock.WaitQueue: a release by this
// Locker hands the key to its first local waiter; releases by other
// processes are found by the poll.
type backend struct {
	db  *sql.DB
	sql [5]string // the statements' text, by index st*

	prepMu     sync.RWMutex // held for reading while a statement runs
	prepared   *prepared    // nil until the first statement and after Close
	prepClosed bool         // Close closed prepared

	q   *lock.WaitQueue // the Locker's local waiters
	det lock.Detached   // acquire statements whose callers left
}

// prepared are the statements prepared on db; database/sql prepares each
// again on every connection it runs on, once.
type prepared [5]*sql.Stmt

var (
	_ lock.Backend  = (*backend)(nil)
	_ lock.Notifier = (*backend)(nil)
)

func (b *backend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:          "mysql",
		TTL:           true,
		Fencing:       true,
		FIFO:          false,
		LossDetection: true, // Refresh checks owner and expiry on the server
		CrossProcess:  true,
		// A release hands the key to the next waiter of its own Locker;
		// waiters in other processes poll (see the package documentation).
		Notify: false,
	}
}

func (b *backend) DefaultTTL() time.Duration { return DefaultTTL }

// prepare prepares the statements on first use, without holding a lock
// while it talks to the server (callers with other deadlines must not wait
// behind it); of two concurrent first callers, one's statements are kept.
func (b *backend) prepare(ctx context.Context) error {
	b.prepMu.RLock()
	done := b.prepared != nil || b.prepClosed
	b.prepMu.RUnlock()
	if done {
		return nil
	}
	var p prepared
	for j := range p {
		st, err := b.db.PrepareContext(ctx, b.sql[j])
		if err != nil {
			p.close()
			return fmt.Errorf("mysqllock: prepare: %w", err)
		}
		p[j] = st
	}
	b.prepMu.Lock()
	defer b.prepMu.Unlock()
	if b.prepared != nil || b.prepClosed {
		p.close()
		return nil
	}
	b.prepared = &p
	return nil
}

func (p *prepared) close() {
	for _, s := range p {
		if s != nil {
			_ = s.Close()
		}
	}
}

// exec runs statement i: prepared, or sent unprepared after Close (leases
// granted before Close still refresh and release). Close waits for it.
func (b *backend) exec(ctx context.Context, i int, args ...any) (sql.Result, error) {
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	b.prepMu.RLock()
	defer b.prepMu.RUnlock()
	if b.prepared == nil {
		return b.db.ExecContext(ctx, b.sql[i], args...)
	}
	return b.prepared[i].ExecContext(ctx, args...)
}

// scan runs statement i for one row and scans it into dest, as exec runs
// its statements.
func (b *backend) scan(ctx context.Context, i int, args []any, dest ...any) error {
	if err := b.prepare(ctx); err != nil {
		return err
	}
	b.prepMu.RLock()
	defer b.prepMu.RUnlock()
	if b.prepared == nil {
		return b.db.QueryRowContext(ctx, b.sql[i], args...).Scan(dest...)
	}
	return b.prepared[i].QueryRowContext(ctx, args...).Scan(dest...)
}

// Try asks the Locker's wait queue first (a local waiter ahead of req, or a
// key handed to it), then runs the acquire statement without abandoning it
// when ctx ends (see [lock.Detached]): the server finishes a statement whose
// client gave up (the driver only closes the connection), and a grant
// committed after the Locker's cleanup release would block the key for a
// TTL.
func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	switch g, v := b.q.Gate(req); v {
	case lock.HandedOver:
		return g, nil
	case lock.Queued:
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	g, err := b.det.Try(ctx, req, func(ctx context.Context) (lock.Grant, error) {
		return b.acquire(ctx, req)
	}, b.releaseOrphan)
	if err == nil {
		b.q.Took(req)
	}
	return g, err
}

// acquire runs the acquire statement with ctx, again when InnoDB chose it
// as a deadlock victim (concurrent inserts of one new key can deadlock; the
// victim's statement was rolled back, so nothing was granted).
func (b *backend) acquire(ctx context.Context, req lock.Request) (lock.Grant, error) {
	var token int64
	var err error
	for attempt := 0; ; attempt++ {
		var res sql.Result
		res, err = b.exec(ctx, stAcquire, req.Key, req.Owner.String(), req.Holder, req.TTL.Microseconds())
		if err == nil {
			token, err = res.LastInsertId()
		}
		if !isDeadlock(err) || attempt == 4 {
			break
		}
	}
	if isDeadlock(err) {
		// Every attempt lost to a concurrent acquire of the same key.
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	if err != nil {
		return lock.Grant{}, fmt.Errorf("mysqllock: acquire: %w", err)
	}
	if token > 0 {
		return lock.Grant{Token: lock.Token(token)}, nil
	}
	he := &lock.HeldError{Key: req.Key}
	var holder string
	var remaining, heldToken int64
	sent := time.Now()
	switch err := b.scan(ctx, stHolder, []any{req.Key}, &holder, &remaining, &heldToken); {
	case err == nil:
		he.Holder = holder
		if remaining > 0 {
			he.ExpiresAt = sent.Add(time.Duration(remaining) * time.Microsecond)
		}
	case errors.Is(err, sql.ErrNoRows):
		// Released since: the caller tries again.
	default:
		// The answer "held" stands; only the details are missing.
	}
	return lock.Grant{}, he
}

// isDeadlock reports a MySQL deadlock (1213): the statement was rolled back.
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}

func (b *backend) Refresh(ctx context.Context, req lock.Request) error {
	res, err := b.exec(ctx, stRefresh, req.TTL.Microseconds(), req.Key, req.Owner.String())
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return fmt.Errorf("mysqllock: refresh: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("mysqllock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

// Release hands the key straight to the first waiter of this Locker (see
// [lock.WaitQueue]) with the handoff statement, which gives the row a new
// owner and token without ever freeing it, and frees the key otherwise.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	h := b.q.Handoff(req)
	if h == nil {
		return b.release(ctx, req)
	}
	sent := time.Now()
	token, err := b.handoff(ctx, req, h.To)
	switch {
	case err == nil:
		h.Done(lock.Grant{Token: token}, sent)
		return nil
	case errors.Is(err, lock.ErrNotHeld):
		h.Failed()
		return fmt.Errorf("mysqllock: release %q: %w", req.Key, lock.ErrNotHeld)
	default:
		// The key may have gone to the waiter: take it back.
		b.releaseOrphan(h.To)
		h.Failed()
		return fmt.Errorf("mysqllock: release: %w", err)
	}
}

// release frees the key if req.Owner holds it and wakes the first waiter
// of this Locker for it.
func (b *backend) release(ctx context.Context, req lock.Request) error {
	res, err := b.exec(ctx, stRelease, req.Key, req.Owner.String())
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return fmt.Errorf("mysqllock: release: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("mysqllock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	b.q.Wake(req.Key)
	return nil
}

// handoff moves the key from from.Owner, which must hold it, to to.Owner
// with to's holder name and TTL, in one statement, and returns to's token.
// It returns an error matching lock.ErrNotHeld, and changes nothing, when
// from.Owner does not hold the key; any other error leaves the outcome
// unknown. It is the atomic step a local handoff (lock.WaitQueue) asks of
// the engine: the key passes to a waiter of this Locker without becoming
// free.
func (b *backend) handoff(ctx context.Context, from, to lock.Request) (lock.Token, error) {
	res, err := b.exec(ctx, stHandoff, to.Owner.String(), to.Holder, to.TTL.Microseconds(), from.Key, from.Owner.String())
	var n, token int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err == nil && n > 0 {
		token, err = res.LastInsertId()
	}
	if err != nil {
		return 0, fmt.Errorf("mysqllock: handoff: %w", err)
	}
	if n == 0 {
		return 0, fmt.Errorf("mysqllock: handoff %q: %w", from.Key, lock.ErrNotHeld)
	}
	if token <= 0 {
		// The key moved but its token did not come back (a statement in a
		// trigger on the table resets the insert id): outcome unknown.
		return 0, fmt.Errorf("mysqllock: handoff %q: the server reported no token; is there a trigger on the table?", from.Key)
	}
	return lock.Token(token), nil
}

// releaseOrphan frees a key granted or handed to a caller that left, with
// a fresh context: the caller's may be why it left.
func (b *backend) releaseOrphan(req lock.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.release(ctx, req)
}

// Close ends the acquire statements left running and waits for them, then
// closes the prepared statements.
func (b *backend) Close() error {
	b.det.Close()
	b.prepMu.Lock()
	p := b.prepared
	b.prepared, b.prepClosed = nil, true
	b.prepMu.Unlock()
	if p != nil {
		p.close()
	}
	return nil
}

// Subscribe puts req at the end of its key's queue of waiters of this
// Locker: a release by this Locker hands the key to the first of them.
// Releases by other processes are found by the poll.
func (b *backend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	return b.q.Join(req), nil
}
