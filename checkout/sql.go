package checkout

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/haita/haita/internal/sqlstore"
	"github.com/haita/haita/sqlcc"
)

// DefaultTable is the checkout table's name when SQLOptions.Table is empty.
const DefaultTable = "haita_checkouts"

// The checkout table's companions are named after it: the table of ended checkouts and the
// indexes. A table name must leave room for the longest suffix.
const endedSuffix = "_ended"

var tableSuffixes = []string{endedSuffix, "_owner", "_until", "_ended_at"}

// SQLOptions configure a [SQLStore]. The zero value is valid.
type SQLOptions struct {
	// Table is the checkout table. The records of ended (broken or
	// expired) checkouts live in a second table named Table + "_ended".
	// Zero selects [DefaultTable]. Must satisfy sqlcc.ValidIdentifier and
	// be at most 54 bytes, so that the names made from it (Table +
	// "_ended_at" the longest) do too.
	Table string
	// Dialect is the SQL dialect. Zero: detected from the *sql.DB's driver
	// (pgx stdlib, go-sql-driver/mysql, modernc.org/sqlite).
	Dialect sqlcc.Dialect
	// Tx configures the transactions the store runs (retries on deadlock,
	// serialization failure and SQLite busy). The zero value is valid.
	Tx sqlcc.TxOptions
}

// SQLStore keeps checkouts durably in PostgreSQL, MySQL/MariaDB or SQLite.
// It is safe for concurrent use, also by many processes sharing the
// database: every operation is one transaction that locks the resource's
// row. The tables are created by [SQLStore.CreateTable] or by the
// statements of [Schema] in your migrations, never implicitly.
//
// On SQLite open the database with "_txlock=immediate" and a busy_timeout
// (see package sqlcc); transactions that find the database busy are
// retried.
type SQLStore struct {
	db             *sql.DB
	d              sqlcc.Dialect
	table, ended   string // quoted
	rawTable       string
	tx             sqlcc.TxOptions
	lockTable      sqlcc.Table
	cols           string
	insertIfAbsent string
	recordEnded    string
}

var _ TxStore = (*SQLStore)(nil)

// NewSQLStore returns a store on db. It returns an error matching
// [ErrInvalid] for a nil db, an invalid table name or an undetectable
// dialect. It does no I/O.
func NewSQLStore(db *sql.DB, opts SQLOptions) (*SQLStore, error) {
	st, err := sqlstore.Open(db, opts.Dialect, opts.Table, DefaultTable, tableSuffixes...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	d, t, e := st.Dialect, st.Quoted, st.Quote(endedSuffix)
	s := &SQLStore{db: db, d: d, table: t, ended: e, rawTable: st.Name, tx: opts.Tx,
		lockTable: sqlcc.Table{Dialect: d, Name: st.Name, Key: "resource"},
		cols:      "resource, owner, token, since_ns, beat_ns, until_ns"}
	switch d {
	case sqlcc.MySQL:
		s.insertIfAbsent = " ON DUPLICATE KEY UPDATE resource = resource"
	default:
		s.insertIfAbsent = " ON CONFLICT DO NOTHING"
	}
	s.recordEnded = s.q("INSERT INTO " + e + " (token, resource, owner, since_ns, ended_ns, state, broken_by, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
	if d == sqlcc.MySQL {
		s.recordEnded += " ON DUPLICATE KEY UPDATE token = token"
	} else {
		s.recordEnded += " ON CONFLICT DO NOTHING"
	}
	return s, nil
}

// Schema returns the statements that create the checkout tables named
// table and table+"_ended" (idempotent: IF NOT EXISTS) for dialect, for use
// in migrations. An empty table selects [DefaultTable].
func Schema(dialect sqlcc.Dialect, table string) ([]string, error) {
	tb, err := sqlstore.NewTable(dialect, table, DefaultTable, tableSuffixes...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	t, e, ix := tb.Quoted, tb.Quote(endedSuffix), func(name string) string { return tb.Quote("_" + name) }
	text := "TEXT"
	if dialect == sqlcc.MySQL {
		text = "VARCHAR(2000)"
	}
	return []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	resource VARCHAR(512) NOT NULL PRIMARY KEY,
	owner    VARCHAR(256) NOT NULL,
	token    VARCHAR(64)  NOT NULL,
	since_ns BIGINT       NOT NULL,
	beat_ns  BIGINT       NOT NULL,
	until_ns BIGINT       NOT NULL
)`, t),
		fmt.Sprintf("CREATE INDEX %s ON %s (owner)", ix("owner"), t),
		fmt.Sprintf("CREATE INDEX %s ON %s (until_ns)", ix("until"), t),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	token     VARCHAR(64)  NOT NULL PRIMARY KEY,
	resource  VARCHAR(512) NOT NULL,
	owner     VARCHAR(256) NOT NULL,
	since_ns  BIGINT       NOT NULL,
	ended_ns  BIGINT       NOT NULL,
	state     VARCHAR(16)  NOT NULL,
	broken_by VARCHAR(256) NOT NULL,
	reason    %s NOT NULL
)`, e, text),
		fmt.Sprintf("CREATE INDEX %s ON %s (ended_ns)", ix("ended_at"), e),
	}, nil
}

// CreateTable creates the store's tables and indexes if they do not exist.
// Call it once at start-up (or run [Schema]'s statements in a migration);
// NewSQLStore never creates tables by itself.
func (s *SQLStore) CreateTable(ctx context.Context) error {
	stmts, err := Schema(s.d, s.rawTable)
	if err != nil {
		return err
	}
	for _, q := range stmts {
		if strings.HasPrefix(q, "CREATE INDEX") {
			// CREATE INDEX IF NOT EXISTS is not MySQL syntax: tolerate
			// "already exists" by checking first.
			exists, err := s.indexExists(ctx, q)
			if err != nil {
				return err
			}
			if exists {
				continue
			}
		}
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("checkout: create table: %w", err)
		}
	}
	return nil
}

func (s *SQLStore) indexExists(ctx context.Context, createIndex string) (bool, error) {
	// The index name is the third word, quoted.
	name := strings.Trim(strings.Fields(createIndex)[2], "`\"")
	var q string
	switch s.d {
	case sqlcc.Postgres:
		q = "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1"
	case sqlcc.MySQL:
		q = "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = ?"
	default:
		q = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?"
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, name).Scan(&n); err != nil {
		return false, fmt.Errorf("checkout: create table: %w", err)
	}
	return n > 0, nil
}

// q rewrites ? placeholders to $n on PostgreSQL.
func (s *SQLStore) q(query string) string {
	return s.d.Rebind(query)
}

func ns(t time.Time) int64     { return t.UnixNano() }
func fromNS(n int64) time.Time { return time.Unix(0, n).UTC() }
func (s *SQLStore) run(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return sqlcc.RunTx(ctx, s.db, s.tx, fn)
}

// lockRow locks and reads the row of resource; ok is false when there is
// none.
func (s *SQLStore) lockRow(ctx context.Context, tx *sql.Tx, resource string) (c Checkout, ok bool, err error) {
	var since, beat, until int64
	err = sqlcc.LockRow(ctx, tx, s.lockTable, resource, sqlcc.LockOptions{},
		[]string{"owner", "token", "since_ns", "beat_ns", "until_ns"}, &c.Owner, &c.Token, &since, &beat, &until)
	if errors.Is(err, sqlcc.ErrNotFound) {
		return Checkout{}, false, nil
	}
	if err != nil {
		return Checkout{}, false, fmt.Errorf("checkout: %w", err)
	}
	c.Resource = resource
	c.Since, c.LastBeat, c.Until = fromNS(since), fromNS(beat), fromNS(until)
	return c, true, nil
}

// ended explains why token does not hold resource: a *BrokenError,
// ErrExpired or ErrNotHeld.
func (s *SQLStore) why(ctx context.Context, db sqlcc.DB, resource, token string) error {
	var state, owner, by, reason string
	var at int64
	err := db.QueryRowContext(ctx, s.q("SELECT state, owner, broken_by, reason, ended_ns FROM "+s.ended+" WHERE token = ? AND resource = ?"),
		token, resource).Scan(&state, &owner, &by, &reason, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotHeld
	case err != nil:
		return fmt.Errorf("checkout: %w", err)
	case state == "broken":
		return &BrokenError{Resource: resource, Owner: owner, By: by, At: fromNS(at), Reason: reason}
	default:
		return ErrExpired
	}
}

func (s *SQLStore) record(ctx context.Context, tx *sql.Tx, c Checkout, at time.Time, state, by, reason string) error {
	if _, err := tx.ExecContext(ctx, s.recordEnded, c.Token, c.Resource, c.Owner, ns(c.Since), ns(at), state, by, reason); err != nil {
		return fmt.Errorf("checkout: record %s checkout: %w", state, err)
	}
	return nil
}

// Acquire implements [Store].
func (s *SQLStore) Acquire(ctx context.Context, req Request) (Checkout, error) {
	var out Checkout
	err := s.run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c := Checkout{Resource: req.Resource, Owner: req.Owner, Token: req.Token, Since: req.Now, LastBeat: req.Now,
			Until: until(req.Now, req.Now, req.Idle, req.MaxAge)}
		res, err := tx.ExecContext(ctx, s.q("INSERT INTO "+s.table+" ("+s.cols+") VALUES (?, ?, ?, ?, ?, ?)"+s.insertIfAbsent),
			c.Resource, c.Owner, c.Token, ns(c.Since), ns(c.LastBeat), ns(c.Until))
		if err != nil {
			return fmt.Errorf("checkout: acquire: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("checkout: acquire: %w", err)
		} else if n == 1 {
			out = c
			return nil
		}
		cur, ok, err := s.lockRow(ctx, tx, req.Resource)
		if err != nil {
			return err
		}
		switch {
		case ok && cur.Token == req.Token:
			// Inserted after all (a driver reporting found rows).
			out = c
			return nil
		case ok && cur.live(req.Now) && cur.Owner == req.Owner:
			cur.LastBeat = req.Now
			cur.Until = until(cur.Since, req.Now, req.Idle, req.MaxAge)
			out = cur
			return s.update(ctx, tx, "beat_ns = ?, until_ns = ?", req.Resource, cur.Token, ns(cur.LastBeat), ns(cur.Until))
		case ok && cur.live(req.Now):
			return &HeldError{Resource: req.Resource, Holder: cur.Owner, Since: cur.Since, Until: cur.Until}
		case ok:
			if err := s.record(ctx, tx, cur, cur.Until, "expired", "", ""); err != nil {
				return err
			}
			out = c
			return s.update(ctx, tx, "owner = ?, token = ?, since_ns = ?, beat_ns = ?, until_ns = ?", req.Resource, cur.Token,
				c.Owner, c.Token, ns(c.Since), ns(c.LastBeat), ns(c.Until))
		default:
			// The row was deleted between the insert and the lock: a
			// retry inserts it.
			return errRetry
		}
	})
	if errors.Is(err, errRetry) {
		return s.Acquire(ctx, req)
	}
	return out, err
}

var errRetry = errors.New("checkout: retry")

// update sets columns of the row of resource held by token.
func (s *SQLStore) update(ctx context.Context, tx *sql.Tx, set, resource, token string, args ...any) error {
	args = append(args, resource, token)
	if _, err := tx.ExecContext(ctx, s.q("UPDATE "+s.table+" SET "+set+" WHERE resource = ? AND token = ?"), args...); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	return nil
}

// verify locks the row and checks that req.Token holds it live.
func (s *SQLStore) verify(ctx context.Context, tx *sql.Tx, req Request) (Checkout, error) {
	cur, ok, err := s.lockRow(ctx, tx, req.Resource)
	switch {
	case err != nil:
		return Checkout{}, err
	case ok && cur.Token == req.Token && cur.live(req.Now):
		return cur, nil
	case ok && cur.Token == req.Token:
		return Checkout{}, ErrExpired
	default:
		return Checkout{}, s.why(ctx, tx, req.Resource, req.Token)
	}
}

// beat renews the verified checkout c at req.Now.
func (s *SQLStore) beat(ctx context.Context, tx *sql.Tx, c Checkout, req Request) (Checkout, error) {
	c.LastBeat = req.Now
	c.Until = until(c.Since, req.Now, req.Idle, req.MaxAge)
	return c, s.update(ctx, tx, "beat_ns = ?, until_ns = ?", c.Resource, c.Token, ns(c.LastBeat), ns(c.Until))
}

// Heartbeat implements [Store].
func (s *SQLStore) Heartbeat(ctx context.Context, req Request) (Checkout, error) {
	var out Checkout
	err := s.run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c, err := s.verify(ctx, tx, req)
		if err != nil {
			return err
		}
		out, err = s.beat(ctx, tx, c, req)
		return err
	})
	return out, err
}

// Save implements [TxStore].
func (s *SQLStore) Save(ctx context.Context, req Request, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c, err := s.verify(ctx, tx, req)
		if err != nil {
			return err
		}
		if _, err := s.beat(ctx, tx, c, req); err != nil {
			return err
		}
		return fn(ctx, tx)
	})
}

// Release implements [Store].
func (s *SQLStore) Release(ctx context.Context, req Request) error {
	res, err := s.db.ExecContext(ctx, s.q("DELETE FROM "+s.table+" WHERE resource = ? AND token = ?"), req.Resource, req.Token)
	if err != nil {
		return fmt.Errorf("checkout: release: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("checkout: release: %w", err)
	} else if n == 1 {
		return nil
	}
	return s.why(ctx, s.db, req.Resource, req.Token)
}

// ReleaseOwner implements [Store].
func (s *SQLStore) ReleaseOwner(ctx context.Context, req Request) (int, error) {
	res, err := s.db.ExecContext(ctx, s.q("DELETE FROM "+s.table+" WHERE owner = ? AND until_ns > ?"), req.Owner, ns(req.Now))
	if err != nil {
		return 0, fmt.Errorf("checkout: release owner: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("checkout: release owner: %w", err)
	}
	return int(n), nil
}

// Break implements [Store].
func (s *SQLStore) Break(ctx context.Context, req Request) (Checkout, error) {
	var out Checkout
	err := s.run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		cur, ok, err := s.lockRow(ctx, tx, req.Resource)
		if err != nil {
			return err
		}
		if !ok || !cur.live(req.Now) {
			return ErrNotHeld
		}
		if err := s.record(ctx, tx, cur, req.Now, "broken", req.By, req.Reason); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM "+s.table+" WHERE resource = ? AND token = ?"), cur.Resource, cur.Token); err != nil {
			return fmt.Errorf("checkout: break: %w", err)
		}
		out = cur
		return nil
	})
	return out, err
}

// Get implements [Store].
func (s *SQLStore) Get(ctx context.Context, req Request) (Checkout, bool, error) {
	c := Checkout{Resource: req.Resource}
	var since, beat, until int64
	err := s.db.QueryRowContext(ctx, s.q("SELECT owner, since_ns, beat_ns, until_ns FROM "+s.table+" WHERE resource = ? AND until_ns > ?"),
		req.Resource, ns(req.Now)).Scan(&c.Owner, &since, &beat, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return Checkout{}, false, nil
	}
	if err != nil {
		return Checkout{}, false, fmt.Errorf("checkout: get: %w", err)
	}
	c.Since, c.LastBeat, c.Until = fromNS(since), fromNS(beat), fromNS(until)
	return c, true, nil
}

// Sweep implements [Store].
func (s *SQLStore) Sweep(ctx context.Context, req Request) (int, error) {
	var n int64
	err := s.run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := ns(req.Now)
		ins := "INSERT INTO " + s.ended + " (token, resource, owner, since_ns, ended_ns, state, broken_by, reason) " +
			"SELECT token, resource, owner, since_ns, until_ns, 'expired', '', '' FROM " + s.table + " WHERE until_ns <= ?"
		if s.d == sqlcc.MySQL {
			ins += " ON DUPLICATE KEY UPDATE ended_ns = ended_ns"
		} else {
			ins += " ON CONFLICT DO NOTHING"
		}
		if _, err := tx.ExecContext(ctx, s.q(ins), now); err != nil {
			return fmt.Errorf("checkout: sweep: %w", err)
		}
		res, err := tx.ExecContext(ctx, s.q("DELETE FROM "+s.table+" WHERE until_ns <= ?"), now)
		if err != nil {
			return fmt.Errorf("checkout: sweep: %w", err)
		}
		if n, err = res.RowsAffected(); err != nil {
			return fmt.Errorf("checkout: sweep: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM "+s.ended+" WHERE ended_ns < ?"), ns(req.Now.Add(-req.Retention))); err != nil {
			return fmt.Errorf("checkout: sweep: %w", err)
		}
		return nil
	})
	return int(n), err
}
