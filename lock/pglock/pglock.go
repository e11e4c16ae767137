package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/haita/haita/lock"
)

// DefaultTable is the lease table used unless [WithTable] names another.
const DefaultTable = "haita_locks"

// DefaultTTL is the lease TTL used when lock.Options.TTL is zero.
const DefaultTTL = 30 * time.Second

// Option configures what [New] and [NewDB] add to [lock.Options] for
// PostgreSQL.
type Option func(*config)

type config struct {
	table string
}

// WithTable selects the lease table, optionally schema-qualified ("locks"
// or "app.locks"); each part must match [A-Za-z_][A-Za-z0-9_]* and the
// whole name be at most 57 bytes. The default is [DefaultTable]. The table
// is created by [CreateTable], never by New.
func WithTable(table string) Option { return func(c *config) { c.table = table } }

// Locker is a [lock.Locker] on a PostgreSQL lease table; see [New].
type Locker struct {
	lock.Locker
}

var _ lock.Locker = (*Locker)(nil)

// New returns a Locker on the lease table ([DefaultTable] unless
// [WithTable] names another), running its statements on pool and listening
// for releases on one connection it takes out of the pool on the first wait
// (the pool no longer counts it). The table must exist (see [CreateTable]).
// The default TTL is [DefaultTTL].
//
// The Locker is safe for concurrent use. The caller must Close it; Close
// does not close pool. It returns an error matching [lock.ErrInvalidOptions]
// for a nil pool, a nil option, an invalid table name or invalid opts.
func New(pool *pgxpool.Pool, opts lock.Options, options ...Option) (*Locker, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pglock: nil pool", lock.ErrInvalidOptions)
	}
	return newLocker(poolClient{pool}, opts, options)
}

// NewDB is like [New] for a *sql.DB opened with pgx's stdlib driver
// (sql.Open("pgx", dsn) or stdlib.OpenDB). It returns an error matching
// [lock.ErrInvalidOptions] for a nil db or one using another driver.
func NewDB(db *sql.DB, opts lock.Options, options ...Option) (*Locker, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: pglock: nil db", lock.ErrInvalidOptions)
	}
	if _, ok := db.Driver().(*stdlib.Driver); !ok {
		return nil, fmt.Errorf("%w: pglock: db uses driver %T, not pgx's stdlib driver", lock.ErrInvalidOptions, db.Driver())
	}
	return newLocker(dbClient{db}, opts, options)
}

// Schema returns the statements that create the lease table, its token
// sequence and its wait table (the table's name + "_wait"; idempotent: IF
// NOT EXISTS), for use in migrations. An empty
// table selects [DefaultTable]. It returns an error matching
// [lock.ErrInvalidOptions] for an invalid name.
func Schema(table string) (string, error) {
	n, err := parseTable(table)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`CREATE SEQUENCE IF NOT EXISTS %[2]s;
CREATE TABLE IF NOT EXISTS %[1]s (
	key        text        PRIMARY KEY,
	owner      text        NOT NULL,
	holder     text        NOT NULL,
	token      bigint      NOT NULL,
	expires_at timestamptz NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS %[3]s (
	key        text        NOT NULL,
	seq        bigint      NOT NULL,
	owner      text        NOT NULL,
	holder     text        NOT NULL,
	channel    text        NOT NULL,
	ttl        bigint      NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (key, seq)
);
`, n.table, n.seq, n.wait), nil
}

// CreateTable creates the lease table and its sequence with pool unless
// they exist. It is safe to call concurrently and repeatedly.
func CreateTable(ctx context.Context, pool *pgxpool.Pool, table string) error {
	ddl, err := Schema(table)
	if err != nil {
		return err
	}
	return createTable(ctx, poolClient{pool}, ddl)
}

// CreateTableDB is [CreateTable] for a *sql.DB.
func CreateTableDB(ctx context.Context, db *sql.DB, table string) error {
	ddl, err := Schema(table)
	if err != nil {
		return err
	}
	return createTable(ctx, dbClient{db}, ddl)
}

func createTable(ctx context.Context, c client, ddl string) error {
	// Concurrent CREATE … IF NOT EXISTS can still collide on the catalog's
	// unique index. Sent without arguments, the statements go over the
	// simple protocol as one implicit transaction on one connection, so a
	// transaction-scoped advisory lock taken first serialises them.
	if _, err := c.exec(ctx, "SELECT pg_advisory_xact_lock(7245368161);\n"+ddl); err != nil {
		return fmt.Errorf("pglock: create table: %w", err)
	}
	return nil
}

// ident matches one part of a table name.
var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// names are the quoted SQL names derived from a table name.
type names struct {
	table   string // quoted, possibly schema-qualified
	seq     string // quoted sequence name: the table's name + "_token"
	wait    string // quoted wait table: the table's name + "_wait"
	seqText string // the sequence for nextval('…'), as a regclass literal
	channel string // LISTEN/NOTIFY channel: the table name as given
	// held is the channel a handoff to a queued waiter notifies with the
	// key, for holder readers: the channel + "_held" (within PostgreSQL's
	// 63 bytes for a name of at most 57).
	held string
}

func parseTable(table string) (names, error) {
	if table == "" {
		table = DefaultTable
	}
	bad := func(why string) (names, error) {
		return names{}, fmt.Errorf("%w: pglock: table name %q %s", lock.ErrInvalidOptions, table, why)
	}
	if len(table) > 57 {
		return bad("is longer than 57 bytes")
	}
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return bad("has more than one dot")
	}
	for _, p := range parts {
		if !ident.MatchString(p) {
			return bad("is not [schema.]identifier of letters, digits and underscores")
		}
	}
	quote := func(ps []string) string {
		q := make([]string, len(ps))
		for i, p := range ps {
			q[i] = `"` + p + `"`
		}
		return strings.Join(q, ".")
	}
	suffixed := func(suffix string) string {
		ps := append([]string(nil), parts...)
		ps[len(ps)-1] += suffix
		return quote(ps)
	}
	seq := suffixed("_token")
	return names{table: quote(parts), seq: seq, seqText: "'" + seq + "'", wait: suffixed("_wait"), channel: table, held: table + "_held"}, nil
}

func newLocker(c client, opts lock.Options, options []Option) (*Locker, error) {
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
	b := &backend{c: c, n: n}
	b.bg, b.stop = context.WithCancel(context.Background())
	f := func(stmt string) string { return fmt.Sprintf(stmt, n.table, n.seqText, n.wait) }
	b.acquireSQL = f(acquireSQL)
	b.refreshSQL = f(refreshSQL)
	b.releaseSQL = f(queueReleaseSQL)
	b.enqueueSQL = f(enqueueSQL)
	b.checkSQL = f(checkSQL)
	b.heartbeatSQL = f(heartbeatSQL)
	b.leaveSQL = f(leaveSQL)
	// A notification on the table's channel (payload: a key freed with
	// nobody queued) wakes the Locker's waiters of that key; one on its own
	// channel ("token owner key") hands a key to one of its waiters. After
	// a reconnection every waiter looks again.
	b.own = "haita_" + lock.NewOwner().String()[:16]
	b.l = newListener(c, []string{n.channel, b.own}, func(channel, payload string) {
		if channel == b.own {
			b.ws.handedPayload(payload)
		} else {
			b.ws.wakeKey(payload)
		}
	}, func() { b.ws.wakeKey("") })
	l, err := lock.New(b, opts)
	if err != nil {
		return nil, err
	}
	return &Locker{l}, nil
}

// The statements. %[1]s is the quoted table, %[2]s the sequence literal.
// Durations travel as microseconds and are turned into intervals by the
// server, so the database clock alone decides expiry.
//
// Rows are never deleted: Release marks its row free. A token computed for
// the INSERT branch is drawn before the row is inserted, and the statement
// may wait on a concurrent inserter's transaction in between; were rows
// deleted, that concurrent holder could take the key, release it and have
// its row deleted while this statement waits, and this statement would then
// insert a token smaller than the one just used. With rows kept, the INSERT
// branch only ever succeeds for a key that has had no row at all, and every
// later grant takes the UPDATE branch, which draws its token under the row
// lock.
const (
	// acquireSQL: see acquireCTE.
	acquireSQL = `WITH ` + acquireCTE + `
SELECT ` + acquireResult

	refreshSQL = `UPDATE %[1]s SET expires_at = now() + $3::bigint * interval '1 microsecond'
WHERE key = $1 AND owner = $2 AND expires_at > now()`
)

// backend implements lock.Backend and lock.Queuer.
type backend struct {
	c            client
	n            names
	ws           waiters // the Locker's queued waiters
	l            *listener
	own          string // the channel the Locker alone listens on
	acquireSQL   string
	refreshSQL   string
	releaseSQL   string
	enqueueSQL   string
	checkSQL     string
	heartbeatSQL string
	leaveSQL     string

	det lock.Detached // statements acquire left running

	// bg is the context of waiters' statements, which do not end with
	// their callers' (see stmtContext); it ends with Close.
	bg   context.Context
	stop context.CancelFunc
}

var (
	_ lock.Backend = (*backend)(nil)
	_ lock.Queuer  = (*backend)(nil)
)

func (b *backend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:    "postgres",
		TTL:     true,
		Fencing: true,
		// Waiters queue in the wait table, but an attempt that finds the
		// key free between a release and a queued waiter's look takes it.
		FIFO:          false,
		LossDetection: true, // Refresh checks owner and expiry on the server
		CrossProcess:  true,
		Notify:        true,
	}
}

func (b *backend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	if b.ws.waiting(req.Key) {
		// Queue behind this Locker's waiters without a round trip: the
		// key is held, or about to go to one of them.
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	return b.acquire(ctx, req)
}

// acquire runs the acquire statement without abandoning it when ctx ends
// (see [lock.Detached]): the server runs a statement whose client gave up,
// and a grant committed after the Locker's cleanup release would block the
// key for a TTL.
func (b *backend) acquire(ctx context.Context, req lock.Request) (lock.Grant, error) {
	return b.det.Try(ctx, req, func(ctx context.Context) (lock.Grant, error) {
		return b.acquireRow(ctx, req)
	}, b.releaseOrphan)
}

// acquireRow runs the acquire statement with ctx.
func (b *backend) acquireRow(ctx context.Context, req lock.Request) (lock.Grant, error) {
	var token, remaining int64
	var holder string
	sent := time.Now()
	err := b.c.queryRow(ctx, b.acquireSQL, req.Key, req.Owner.String(), req.Holder, req.TTL.Microseconds()).
		Scan(&token, &holder, &remaining)
	if err != nil {
		return lock.Grant{}, fmt.Errorf("pglock: acquire: %w", err)
	}
	if token == 0 {
		he := &lock.HeldError{Key: req.Key, Holder: holder}
		if remaining > 0 {
			he.ExpiresAt = sent.Add(time.Duration(remaining) * time.Microsecond)
		}
		return lock.Grant{}, he
	}
	return lock.Grant{Token: lock.Token(token)}, nil
}

func (b *backend) Refresh(ctx context.Context, req lock.Request) error {
	n, err := b.c.exec(ctx, b.refreshSQL, req.Key, req.Owner.String(), req.TTL.Microseconds())
	if err != nil {
		return fmt.Errorf("pglock: refresh: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("pglock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

// Release hands the key to the oldest live waiter in the wait table, of
// any process, in one statement that notifies that waiter alone; with
// nobody waiting it frees the row and notifies the table's channel. A
// waiter of this Locker is told at once.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	return b.release(ctx, req)
}

// releaseOrphan frees a key that may have gone to a waiter that left, with
// a fresh context: the caller's may be why the waiter left.
func (b *backend) releaseOrphan(req lock.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.release(ctx, req)
}

// release frees the key, or hands it on, if req.Owner holds it.
func (b *backend) release(ctx context.Context, req lock.Request) error {
	var released, token, notified, notifiedHeld int64
	var next string
	err := b.c.queryRow(ctx, b.releaseSQL, req.Key, req.Owner.String(), b.n.channel, b.n.held).
		Scan(&released, &next, &token, &notified, &notifiedHeld)
	if err != nil {
		return fmt.Errorf("pglock: release: %w", err)
	}
	if released == 0 {
		return fmt.Errorf("pglock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	if next != "" {
		b.ws.handed(next, token)
	}
	return nil
}

// Close stops the listener, the waiters' statements and the statements
// acquire left running, and waits for them.
func (b *backend) Close() error {
	b.l.close()
	b.stop()
	b.det.Close()
	return nil
}

// client is what the backend needs from pgx or database/sql.
type client interface {
	queryRow(ctx context.Context, sql string, args ...any) row
	exec(ctx context.Context, sql string, args ...any) (int64, error)
	// listen runs fn on a connection of its own; the connection is closed
	// (never returned to a pool) after fn returns.
	listen(ctx context.Context, fn func(*pgx.Conn) error) error
}

type row interface{ Scan(dest ...any) error }

type poolClient struct{ p *pgxpool.Pool }

func (c poolClient) queryRow(ctx context.Context, sql string, args ...any) row {
	return c.p.QueryRow(ctx, sql, args...)
}

func (c poolClient) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := c.p.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func (c poolClient) listen(ctx context.Context, fn func(*pgx.Conn) error) error {
	pc, err := c.p.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	return fn(conn)
}

type dbClient struct{ db *sql.DB }

func (c dbClient) queryRow(ctx context.Context, sql string, args ...any) row {
	return c.db.QueryRowContext(ctx, sql, args...)
}

func (c dbClient) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	res, err := c.db.ExecContext(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c dbClient) listen(ctx context.Context, fn func(*pgx.Conn) error) error {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var ferr error
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			ferr = fmt.Errorf("pglock: driver connection %T is not pgx's", dc)
		} else {
			ferr = fn(sc.Conn())
		}
		// Make database/sql close the connection rather than return it,
		// still LISTENing, to the pool.
		return driver.ErrBadConn
	})
	if ferr != nil {
		return ferr
	}
	return err
}
